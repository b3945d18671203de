"""Typed actions: what a plan step does, shown and run as the same object.

A step is a short list of actions. Each action is a frozen value with a ``show()`` (the
shell a person would type for it, used by the table and the runbook) and a strict JSON form;
the executor is their interpreter and runs nothing that is not one of them. Five types:

- :class:`Run`: an argument list run on a host as root (``sudo -n`` for a non-root SSH user).
- :class:`WriteFile`: a file's whole content, mode and digest, with the diff against the file
  the plan was made from.
- :class:`EtcdCall`: a membership call to etcd's API (add a learner, promote, remove), with its
  arguments. A value that exists only at run time (the ID a member add returns) is a *named
  reference*: the call that produces it names it in ``result``, a later call uses it in
  ``member_ref``, and the journal records the value it resolved to.
- :class:`Wait`: poll until a stated condition holds, with its timeout.
- :class:`AppendWal`: append one record to a WAL file at an offset, the bytes given as hex.
- :class:`CopyFile`: copy a file from one host (or the operator's machine) to another,
  streamed through the tool, and checked by its sha256 at the far end before it is renamed
  into place.

Saved plans are data: :func:`action_from_json` accepts exactly these types and fields and
nothing else (unknown kinds, wrong types or extra fields are a :class:`FormatError`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .errors import FormatError


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def ref_var(ref: str) -> str:
    """The runbook's shell variable for a named reference: ``learner-id:etcd-2`` ->
    ``LEARNER_ID_ETCD_2``."""
    return re.sub(r"[^A-Za-z0-9]", "_", ref).upper()


@dataclass(frozen=True)
class Run:
    host: str
    argv: tuple[str, ...]
    timeout_s: float = 60.0
    kind: ClassVar[str] = "run"

    def show(self) -> str:
        return f"on {self.host} {shlex.quote(shell_join(self.argv))}"

    def summary(self) -> str:
        return f"{self.host}: {shell_join(self.argv)}"


@dataclass(frozen=True)
class WriteFile:
    host: str
    path: str
    content: str
    mode: int
    diff: str = ""
    kind: ClassVar[str] = "write-file"

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.content.encode()).hexdigest()

    def show(self) -> str:
        body = self.content if self.content.endswith("\n") else self.content + "\n"
        return (f"feed {self.host} "
                f"{shlex.quote(shell_join(_write_argv(self.path, self.mode)))}"
                f" <<'ETCD_RECOVERY_EOF'\n{body}ETCD_RECOVERY_EOF")

    def summary(self) -> str:
        return (f"{self.host}: write {self.path} (mode {self.mode:04o}, {self.digest[:19]}...)"
                + (f"\n{self.diff}" if self.diff else ""))


def _write_argv(path: str, mode: int) -> list[str]:
    return ["sh", "-c", 'set -e; umask 077; cat > "$1.tmp"; chmod "$2" "$1.tmp"; '
            'mv "$1.tmp" "$1"', "etcd-recovery", path, f"{mode:04o}"]


MEMBER_CALLS = ("member-add-learner", "member-promote", "member-remove")


@dataclass(frozen=True)
class EtcdCall:
    via: str                          # the member whose client URL receives the call
    call: str                         # one of MEMBER_CALLS
    endpoint: str                     # that member's client URL
    name: str | None = None           # the member the call is about (add, promote)
    peer_url: str | None = None       # add: its peer URL; promote/remove: to find it
    member_id: str | None = None      # remove: the ID (hex) known when planning
    member_ref: str | None = None     # promote: the named reference holding the ID
    result: str | None = None         # add: the name of the reference its ID goes into
    if_listed: bool = False           # remove: only if the member list still holds it
    timeout_s: float = 90.0
    kind: ClassVar[str] = "etcd"

    def show(self) -> str:
        ep = f"--endpoints={self.endpoint}"
        if self.call == "member-add-learner":
            var = ref_var(self.result or "learner-id")
            return (f"{var}=$(retry {self.timeout_s:.0f} add_learner {ep} {self.name} "
                    f"{self.peer_url})")
        if self.call == "member-promote":
            var = ref_var(self.member_ref or "")
            return f'retry {self.timeout_s:.0f} etcdctl {ep} member promote "${var}"'
        if self.if_listed:
            return (f"if etcdctl {ep} member list | grep -q '^{self.member_id},'; then "
                    f"etcdctl {ep} member remove {self.member_id}; fi")
        return f"etcdctl {ep} member remove {self.member_id}"

    def summary(self) -> str:
        if self.call == "member-add-learner":
            return (f"etcd via {self.via}: MemberAdd {self.peer_url} as a learner -> "
                    f"${{{self.result}}}")
        if self.call == "member-promote":
            return f"etcd via {self.via}: MemberPromote ${{{self.member_ref}}} ({self.name})"
        return (f"etcd via {self.via}: MemberRemove {self.member_id}"
                + (" (if still listed)" if self.if_listed else ""))


# The conditions a Wait can state; the executor has a checker for each, the runbook a shell
# predicate (defined in its header).
CONDITIONS = {
    "etcd-stopped": "no etcd process runs on the host",
    "etcd-running": "an etcd process runs on the host",
    "leads-alone": "etcd on the host leads as the only voting member and serves a "
                   "linearizable read",
    "healthy-without-force": "etcd on the host runs without --force-new-cluster, leads, and "
                             "serves a linearizable read",
    "voting-healthy": "etcd on the host is a voting member with a leader and serves a "
                      "linearizable read",
    "members-are": "the member list holds exactly the members named (peer URLs as planned)",
    "serves-peers": "etcd on the host answers on its peer URL (it serves peer traffic)",
}


def peer_probe_argv(peer_url: str) -> list[str]:
    """Does etcd serve its peer URL yet? Run on the member's own host: a connection, a line
    of HTTP, and any answer (or a close) within half a second. etcd binds its peer listener
    first and serves it only after its initial corruption check (embed/etcd.go at v3.6.16:
    configurePeerListeners, then InitialCheck, then servePeers), so until then the connection
    is taken and nothing is read. A TLS listener answers the line too (Go's "client sent an
    HTTP request to an HTTPS server", or a close)."""
    u = urlsplit(peer_url)
    host = u.hostname or ""
    port = str(u.port or (443 if u.scheme == "https" else 80))
    return ["bash", "-c", 'exec 3<>"/dev/tcp/$1/$2" || exit 1; '
            'printf "GET /version HTTP/1.0\r\n\r\n" >&3; '
            'timeout 0.5 head -c1 <&3 >/dev/null', "etcd-recovery", host, port]


@dataclass(frozen=True)
class Wait:
    condition: str                    # a key of CONDITIONS
    host: str
    endpoint: str = ""                # the host's client URL, for etcd conditions
    timeout_s: float = 60.0
    members: tuple[str, ...] = ()     # members-are: "name=peer-url" (name may be empty)
    kind: ClassVar[str] = "wait"

    def show(self) -> str:
        args = {"etcd-stopped": self.host, "etcd-running": self.host,
                "leads-alone": self.endpoint,
                "healthy-without-force": f"{self.host} {self.endpoint}",
                "voting-healthy": self.endpoint,
                "members-are": f"{self.endpoint} {' '.join(self.members)}",
                "serves-peers": f"{self.host} {self.endpoint}"}[self.condition]
        return f"retry {self.timeout_s:.0f} {self.condition.replace('-', '_')} {args}"

    def summary(self) -> str:
        what = CONDITIONS[self.condition]
        if self.condition == "members-are":
            what = f"the member list holds exactly {', '.join(self.members)}"
        return f"{self.host}: wait up to {self.timeout_s:.0f} s until {what}"


@dataclass(frozen=True)
class AppendWal:
    host: str
    file: str
    offset: int
    record_hex: str                   # the framed record, exactly the bytes written
    crc_before: int                   # the running CRC of the WAL's last record (a check)
    commit: int                       # the HardState commit the record carries
    kind: ClassVar[str] = "append-wal"

    def show(self) -> str:
        data = bytes.fromhex(self.record_hex)
        printf = "".join(f"\\{b:03o}" for b in data)
        dd = ["dd", f"of={self.file}", "bs=1M", f"seek={self.offset}", "oflag=seek_bytes",
              "conv=notrunc,fsync", "status=none"]
        return f"printf '{printf}' | feed {self.host} {shlex.quote(shell_join(dd))}"

    def summary(self) -> str:
        return (f"{self.host}: append a HardState record (commit {self.commit}) at offset "
                f"{self.offset} of {self.file}: {self.record_hex}")


@dataclass(frozen=True)
class CopyFile:
    src_host: str                     # "" : a file on the operator's machine
    src_path: str
    host: str                         # where it goes
    path: str
    mode: int
    sha256: str = ""                  # hex; "": the source's, computed when the copy starts
    timeout_s: float = 1800.0
    kind: ClassVar[str] = "copy-file"

    def show(self) -> str:
        tail = f"{self.host} {shlex.quote(self.path)} {self.mode:04o}" + (
            f" {self.sha256}" if self.sha256 else "")
        if not self.src_host:
            return f"copy_in {shlex.quote(self.src_path)} {tail}"
        return f"copy_between {self.src_host} {shlex.quote(self.src_path)} {tail}"

    def summary(self) -> str:
        src = f"{self.src_host}:{self.src_path}" if self.src_host else \
            f"{self.src_path} (this machine)"
        digest = f"sha256 {self.sha256[:16]}..." if self.sha256 else "the source's sha256"
        return (f"{self.host}: copy {src} to {self.path} (mode {self.mode:04o}), checked "
                f"against {digest}")


# A host's sha256 of its standard input, printed as sha256sum prints it ("<hex>  -"):
# Python's hashlib (OpenSSL's, with the CPU's SHA extensions) where the host has a python3
# whose hashlib has sha256, else coreutils' sha256sum, which has no such code path: 1 GB
# through a pipe took 3.7 s with sha256sum on the lab's hosts, 2.0 s with python3 (both
# print the same digest; b2sum took 1.9 s).
SHA256_PY = ('import hashlib,sys\nh=hashlib.sha256()\nr=sys.stdin.buffer.raw.read\n'
             'for b in iter(lambda: r(1 << 20), b""): h.update(b)\n'
             'print(h.hexdigest() + "  -")')
# The shell test for a python3 whose hashlib has sha256 (SHA256_FN, receive_argv).
HAS_PY_SHA256 = "python3 -c 'import hashlib; hashlib.sha256()' 2>/dev/null"
SHA256_FN = (f"sha256() {{ if {HAS_PY_SHA256}; "
             f"then python3 -c '{SHA256_PY}'; else sha256sum; fi; }}; ")


def db_path(data_dir: str) -> str:
    """A member's bbolt file under its data dir."""
    return posixpath.join(data_dir, "member", "snap", "db")


def read_in_order_argv(path: str) -> list[str]:
    """Read a member's db file once, front to back, and throw the bytes away: it puts the
    file in the host's page cache before HashKV reads it. bbolt maps the file with
    ``madvise(MADV_RANDOM)`` (go.etcd.io/bbolt bolt_unix.go ``mmap``, v1.3.12 and v1.4.3),
    so the kernel reads no further ahead than the page a fault asks for; HashKV then walks
    every key and value (server/mvcc/hash.go ``unsafeHashByRev``, etcd v3.5.35), and a db
    that is not in the cache is read 4 KiB at a time. Measured on the lab, 5 members, 1 GB,
    default method: the learners' db files left the page cache as fast as they were written
    (fincore), the final HashKVs took 12-35 s each, and 0.3-2.4 s after this read (which
    took 4 s for the four hosts at once, at 0.6-1.2 GB/s)."""
    return ["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none"]


def sha256_argv(path: str) -> list[str]:
    """The sha256 of a file on a host (SHA256_FN), as ``<hex>  -``; fails when it cannot be
    read (sha256sum's or the shell's message on stderr)."""
    return ["sh", "-c", SHA256_FN + 'sha256 < "$1"', "etcd-recovery", path]


# The receiving end of a copy where the host has a python3 whose hashlib has sha256: one
# process reads stdin, writes it to the .partial and hashes it (argv: PATH SHA256; exits
# non-zero with the reason). It asks for a 1 MiB pipe from sshd (F_SETPIPE_SZ, 1031 on
# Linux: fcntl(2)), so a read takes up to 1 MiB instead of 64 KiB. Measured on the lab, 1 GB
# from one host to three at once through this machine: 7.3-8.2 s, against 11.4-11.8 s with
# `tee` feeding the hash through a second pipe, and 7.1-7.3 s with no hash at all. No single
# quote in it: it stands inside one in the shell script. Python 3.5 or later.
RECEIVE_PY = ('import fcntl,hashlib,sys\n'
              'p=sys.argv[1]+".partial"\n'
              'if sys.platform.startswith("linux"):\n'
              '    try: fcntl.fcntl(0,1031,1<<20)\n'
              '    except OSError: pass\n'
              'h=hashlib.sha256()\nr=sys.stdin.buffer.raw.read\n'
              'try:\n'
              '    with open(p,"wb") as f:\n'
              '        for b in iter(lambda: r(1<<20),b""):\n'
              '            h.update(b)\n'
              '            f.write(b)\n'
              'except OSError as e:\n'
              '    sys.exit(p+": not written whole: "+(e.strerror or str(e)))\n'
              'g=h.hexdigest()\n'
              'if g!=sys.argv[2]:\n'
              '    sys.exit(p+": sha256 "+g+", not "+sys.argv[2])\n')


def receive_argv(path: str, mode: int, sha256: str) -> list[str]:
    """What the far end of a copy runs: stdin to ``<path>.partial``, hashed as it is written
    (no second pass over the file, which for 1 GB was seconds after the last byte), then
    renamed onto ``path`` when the sha256 matches and every byte was written. With a python3
    whose hashlib works, RECEIVE_PY does both; else ``tee`` into sha256sum, whose failed
    write is kept in a mark (GNU tee goes on feeding the hash after one). A copy cut short
    leaves only the ``.partial``, redone next time."""
    return ["sh", "-c", 'set -e; umask 077; '
            'mkdir -p "$(dirname "$1")"; rm -f "$1.failed"; '
            f"if {HAS_PY_SHA256}; then "
            f"python3 -c '{RECEIVE_PY}' \"$1\" \"$3\"; else "
            'got=$( { tee "$1.partial" || : > "$1.failed"; } | sha256sum); got=${got%% *}; '
            'if [ -e "$1.failed" ]; then rm -f "$1.failed"; echo "$1.partial: not written '
            'whole" >&2; exit 1; fi; if [ "$got" != "$3" ]; then echo "$1.partial: sha256 '
            '$got, not $3" >&2; exit 1; fi; fi; '
            'chmod "$2" "$1.partial"; mv -f "$1.partial" "$1"', "etcd-recovery", path,
            f"{mode:04o}", sha256]


Action = Run | WriteFile | EtcdCall | Wait | AppendWal | CopyFile
ACTION_TYPES: dict[str, type[Any]] = {c.kind: c for c in (Run, WriteFile, EtcdCall, Wait,
                                                           AppendWal, CopyFile)}


def action_to_json(a: Action) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": a.kind}
    for f in fields(a):
        v = getattr(a, f.name)
        d[f.name] = list(v) if isinstance(v, tuple) else v
    if isinstance(a, WriteFile):
        d["digest"] = a.digest
    return d


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "str | None": (str, type(None)), "int": (int,), "float": (float, int),
    "bool": (bool,), "tuple[str, ...]": (list,),
}


def action_from_json(d: Any, where: str) -> Action:
    """Strictly: the kind must be known, every field present with its type, nothing extra."""
    if not isinstance(d, Mapping):
        raise FormatError(where, 0, "an action must be an object")
    kind = d.get("kind")
    cls = ACTION_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FormatError(where, 0, f"unknown action kind {kind!r} (known: "
                                    f"{', '.join(ACTION_TYPES)})")
    expected = {f.name: f for f in fields(cls)}
    allowed = set(expected) | {"kind"} | ({"digest"} if cls is WriteFile else set())
    extra = sorted(set(d) - allowed)
    if extra:
        raise FormatError(where, 0, f"{kind} action: unexpected field(s) {', '.join(extra)}")
    values: dict[str, Any] = {}
    for name, f in expected.items():
        if name not in d:
            raise FormatError(where, 0, f"{kind} action: missing field {name!r}")
        v = d[name]
        types = _FIELD_TYPES[str(f.type)]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise FormatError(where, 0, f"{kind} action: field {name!r} has the wrong type "
                                        f"({type(v).__name__})")
        if isinstance(v, list):
            if not all(isinstance(x, str) for x in v):
                raise FormatError(where, 0, f"{kind} action: field {name!r} must be a list "
                                            "of strings")
            v = tuple(v)
        values[name] = float(v) if str(f.type) == "float" else v
    action: Action = cls(**values)
    if isinstance(action, EtcdCall) and action.call not in MEMBER_CALLS:
        raise FormatError(where, 0, f"etcd action: unknown call {action.call!r}")
    if isinstance(action, Wait) and action.condition not in CONDITIONS:
        raise FormatError(where, 0, f"wait action: unknown condition {action.condition!r}")
    if isinstance(action, WriteFile) and d.get("digest", action.digest) != action.digest:
        raise FormatError(where, 0, f"write-file action: the digest does not match the "
                                    f"content of {action.path}")
    if isinstance(action, AppendWal):
        try:
            bytes.fromhex(action.record_hex)
        except ValueError as exc:
            raise FormatError(where, 0, "append-wal action: record_hex is not hex") from exc
    return action
