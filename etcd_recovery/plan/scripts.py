"""The host shell scripts plans run, as named units: the command guard, the recovery lock,
the free-space read, the host journal line, the binary install, the backup, the WAL-file test
and the move-aside. Each returns an argv; ``tests/unit/test_host_scripts.py`` runs them in a
real shell in a temporary directory."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

from ..actions import (
    Run,
)
from ..model import NewBinary
from ..runtimes.base import sh
from .steps import STATE_DIR, run_dir

LOCK_PATH = posixpath.join(STATE_DIR, "lock")
# Every host command that can take time runs under the host's command lock (flock(1) on
# COMMANDS_LOCK, held by the command and everything it starts) in a session of its own
# (setsid(1): its pid is its process group's id), its pid, run and step in COMMANDS_PID. A
# command goes on when the operator's side goes away (Ctrl-C, SIGKILL, an SSH drop: closing
# the channel stops nothing), so a later command, of a resumed run or of a run that took the
# lock over, finds it and waits until it has ended instead of racing it.
COMMANDS_LOCK = posixpath.join(STATE_DIR, "commands.lock")
COMMANDS_PID = posixpath.join(STATE_DIR, "commands.pid")
# exit status of a guarded command that gave up waiting for an earlier one (EX_TEMPFAIL)
EXIT_STILL_RUNNING = 75

_GUARD = ('set -e; umask 077; mkdir -p "$1"; chmod 0700 "$1"; exec 9>>"$1/commands.lock"; '
          'if ! flock -n 9; then '
          'echo "etcd-recovery: waiting for an earlier command to end (pid run step: '
          '$(cat "$1/commands.pid" 2>/dev/null))" >&2; '
          'flock -w "$4" 9 || { echo "etcd-recovery: the earlier command still runs after '
          '$4 s; nothing was done" >&2; exit 75; }; fi; '
          'd=$1; r=$2; s=$3; shift 4; setsid "$@" & '
          'printf "%s %s %s\\n" "$!" "$r" "$s" > "$d/commands.pid"; wait "$!"')

_PROBE = ('[ -e "$1/commands.lock" ] || exit 0; exec 9>>"$1/commands.lock"; '
          'flock -n 9 && exit 0; printf "busy "; cat "$1/commands.pid" 2>/dev/null; echo')


def guarded(run_id: str, step_id: str, argv: Sequence[str], wait_s: float,
            state_dir: str = STATE_DIR) -> list[str]:
    """``argv`` run under the host's command lock, in a session of its own (see
    COMMANDS_LOCK). An earlier command still holding the lock is waited for, at most
    ``wait_s`` seconds (then exit 75, nothing run); the exit status is ``argv``'s."""
    return sh(_GUARD, state_dir, run_id, step_id, f"{wait_s:.0f}", *argv)


def probe_argv(state_dir: str = STATE_DIR) -> list[str]:
    """Print ``busy PID RUN STEP`` while a guarded command holds the host's command lock,
    nothing when none does."""
    return sh(_PROBE, state_dir)


def is_guarded(argv: Sequence[str]) -> bool:
    return len(argv) > 2 and argv[2] == _GUARD


def lock_argv(run_id: str, path: str = LOCK_PATH, *, take_over: bool = False) -> list[str]:
    """Take the host's recovery lock for ``run_id``; fails when the lock file exists (the
    shell's noclobber, ``set -C``). With ``take_over`` (``--take-over-lock``), take it over
    from a dead run: write it anyway. (A command the dead run left running is waited for by
    the first guarded command.)"""
    noclobber = "" if take_over else "set -C; "
    return sh('set -e; umask 077; mkdir -p "$(dirname "$1")"; chmod 0700 "$(dirname "$1")"; '
              f'{noclobber}echo "$2" > "$1"', path, run_id)


def unlock_argv(run_id: str, path: str = LOCK_PATH) -> list[str]:
    """Release the host's recovery lock if, and only if, ``run_id`` holds it."""
    return sh('set -e; if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then rm -f "$1"; fi',
              path, run_id)


def space_argv(data_dir: str, *more: str) -> list[str]:
    """Make the tool's state directory and print free bytes under it, then the size of what
    the backup copies (the data dir, and ``more``: a WAL dir outside it); fails first when
    the host lacks flock or setsid, which every guarded command needs, or findmnt, which
    move-aside asks whether a rename stays within one mount."""
    return sh('set -e; for c in flock setsid findmnt; do command -v "$c" >/dev/null || { '
              'echo "$c (util-linux) is not installed: the long host commands need it" >&2; '
              'exit 3; }; done; mkdir -p -m 0700 "$1"; df -B1 --output=avail "$1" | '
              'tail -n 1; shift; du -sbc "$@" | tail -n 1 | cut -f1', STATE_DIR, data_dir,
              *more)



def host_record(host: str, run_id: str, step_id: str) -> Run:
    """Append the step's line to the host's own journal (what happened to this host)."""
    line = json.dumps({"run": run_id, "step": step_id, "event": "done"}, sort_keys=True)
    return Run(host, tuple(sh('umask 077; mkdir -p "$(dirname "$2")"; printf "%s\\n" "$1" '
                              '>> "$2"', line, posixpath.join(run_dir(run_id),
                                                              "journal.jsonl"))), 10.0)



def install_binary_argv(new: NewBinary, rdir: str) -> list[str]:
    """Put the build where the unit runs etcd, the original (file or symlink) kept in the run
    directory first; idempotent, so a resumed run neither loses the original nor stops."""
    return sh('set -e; if [ ! -e "$3/etcd.binary.orig" ] && [ ! -L "$3/etcd.binary.orig" ]; '
              'then cp -a "$1" "$3/etcd.binary.orig"; fi; install -m 0755 "$2" "$1.new"; '
              'mv -f "$1.new" "$1"', new.replaces, new.path, rdir)


def backup_argv(data_dir: str, cfg: str, bdir: str, wal_dir: str | None = None) -> list[str]:
    """Copy, prove the copy equal to the source byte for byte (``diff -r``: etcd is fenced, so
    the source holds still), and record a B2SUMS of the copy; a resumed run checks the
    copy against that list instead. ``wal_dir``: a WAL dir outside the data dir (etcd's
    ``--wal-dir``), copied beside it as ``wal`` and covered by the same B2SUMS (nothing is
    copied for it when it does not exist: no WAL there to keep).

    Rerun from any point, it converges and never nests: a partial copy (``data.partial``,
    ``wal.partial``) is copied again; a complete one (``data``, ``wal``, renamed there only
    once ``cp`` has finished) is not copied again but compared with the source again, and its
    B2SUMS computed; a written B2SUMS (renamed into place last) is checked."""
    return sh('set -e; umask 077; mkdir -p "$3"; c=$(basename "$2"); '
              'if [ -f "$3/B2SUMS" ]; then cd "$3"; exec b2sum --quiet -c B2SUMS; fi; '
              'if [ ! -d "$3/data" ]; then rm -rf "$3/data.partial"; '
              'cp -a "$1" "$3/data.partial"; mv -T "$3/data.partial" "$3/data"; fi; '
              'w=; if [ -n "$4" ] && [ -e "$4" ]; then w=wal; if [ ! -d "$3/wal" ]; then '
              'rm -rf "$3/wal.partial"; cp -a "$4" "$3/wal.partial"; '
              'mv -T "$3/wal.partial" "$3/wal"; fi; fi; '
              'rm -f "$3/$c.partial"; cp -a "$2" "$3/$c.partial"; mv -T "$3/$c.partial" "$3/$c"; '
              'diff -rq "$1" "$3/data"; if [ -n "$w" ]; then diff -rq "$4" "$3/wal"; fi; '
              'diff -q "$2" "$3/$c"; cd "$3"; '
              'find data $w "$c" -type f -print0 | xargs -0 -n 1 -P 4 b2sum > B2SUMS.unsorted; '
              'sort -k 2 B2SUMS.unsorted > B2SUMS.partial; rm B2SUMS.unsorted; '
              'mv -T B2SUMS.partial B2SUMS', data_dir, cfg, bdir, *([wal_dir] if wal_dir else []))


def wal_files_argv(wal_dir: str) -> list[str]:
    """Exit 0 when ``wal_dir`` holds a WAL file (``*.wal``: what etcd's wal.Exist looks
    for), 1 when it holds none or does not exist."""
    return sh('for f in "$1"/*.wal; do [ -e "$f" ] && exit 0; done; exit 1', wal_dir)


def move_aside_argv(member_dir: str, moved: str, data_dir: str) -> list[str]:
    """Move ``member_dir`` to ``moved`` and leave an empty ``data_dir``; never deletes a byte
    that is not safely in ``moved``, and converges when rerun from any point.

    On one mount of one file system (the same device, and the same mount in the host's mount
    table: ``findmnt -T``, since a bind mount or a Docker volume of the same disk has the same
    device number) it is one rename (``mv -T``: it fails rather than nest into an existing
    ``moved``). Across mounts (the state dir on another disk, a WAL dir on a volume of its
    own), where rename(2) fails with EXDEV and ``mv`` would fall back to a copy that a kill can
    cut in half, it is a copy to ``moved.partial``, renamed to ``moved`` once complete,
    compared with the source (``diff -r``), then the source renamed to ``<source>.leaving`` and
    only then removed: a rerun finds either the source whole or nothing of it but
    ``<source>.leaving``. A complete ``moved`` already there (an earlier copy across mounts
    whose source could not be removed: a read-only disk since remounted) is compared with the
    source, which then goes the same way, never renamed into it. ``data_dir`` is made (0700)
    when missing: for a WAL dir moved aside,
    its parent directory, where etcd makes the WAL dir again."""
    return sh('set -e; umask 077; mkdir -p "$(dirname "$2")"; '
              'if [ -e "$1" ]; then '
              'm() { printf "%s:%s" "$(stat -c %d "$1")" "$(findmnt -n -o TARGET -T "$1")"; }; '
              'if [ ! -e "$2" ] && [ "$(m "$1")" = "$(m "$(dirname "$2")")" ]; then '
              'mv -T "$1" "$2"; else '
              'if [ ! -e "$2" ]; then rm -rf "$2.partial"; cp -a "$1" "$2.partial"; '
              'mv -T "$2.partial" "$2"; fi; '
              'diff -rq "$1" "$2"; mv -T "$1" "$1.leaving"; fi; fi; '
              'if [ -e "$1.leaving" ] && [ -e "$2" ]; then rm -rf "$1.leaving"; fi; '
              'mkdir -p -m 0700 "$3"; test ! -e "$1"', member_dir, moved, data_dir)
