"""The kubespray / bare-metal layout: etcd.service reads its flags from an environment file."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..etcdlog import Cause
from ..inventory import Member
from .base import _ConfigEdits, sh


class Systemd(_ConfigEdits):
    name = "systemd"

    def config_path(self, m: Member) -> str:
        assert m.env_file
        return m.env_file

    def fenced_config_path(self, m: Member, rdir: str) -> str:
        return self.config_path(m)

    def fence_argv(self, m: Member, rdir: str) -> list[str]:
        assert m.unit
        # --no-reload: the unit's boot-time symlinks go at once; the daemon reload that
        # disable does by default costs about 0.1 s and changes nothing for the stop.
        return sh('set -e; mkdir -p -m 0700 "$2"; systemctl disable --no-reload --now "$1"',
                  m.unit, rdir)

    def stop_argv(self, m: Member, rdir: str) -> list[str]:
        return self.fence_argv(m, rdir)

    def fence_how(self, m: Member) -> str:
        return f"{m.unit} stopped and disabled"

    def start_argv(self, m: Member, staged: str) -> list[str]:
        assert m.unit
        # reset-failed: a unit that hit systemd's start limit (an etcd that crash-looped
        # before it was fenced, or restarts in quick succession) refuses the next start,
        # and with --no-block that refusal is silent: etcd would never start.
        return sh('set -e; if [ -e "$1" ]; then chmod 0600 "$1"; mv "$1" "$2"; fi; '
                  'systemctl enable --no-reload "$3"; systemctl reset-failed "$3" || :; '
                  'systemctl restart --no-block "$3"',
                  staged, self.config_path(m), m.unit)

    def log_argv(self, m: Member, lines: int) -> list[str]:
        # journald keeps the unit's stderr; -o cat: the messages alone, as etcd wrote them.
        return ["journalctl", "-u", m.unit or "etcd.service", "-n", str(lines), "--no-pager",
                "-o", "cat"]

    def state_argv(self, m: Member) -> list[str] | None:
        return ["systemctl", "show", "-p", ",".join(UNIT_PROPERTIES), m.unit or "etcd.service"]

    def state_cause(self, m: Member, state: str, log: Sequence[str],
                    before: str = "") -> Cause | None:
        return unit_cause(m.unit or "etcd.service", state, log, before)


UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "ExecMainCode",
                   "ExecMainStatus", "ExecMainExitTimestampMonotonic")
# systemd's own words, in the unit's journal, on why it could not run the unit's command
# (the first kind, which names the command: src/core/execute.c) or would not start the unit
# (src/core/service.c, unit.c)
_SYSTEMD_SPAWN = re.compile(r"Failed at step \S+ spawning|Failed to locate executable|"
                            r"Failed to execute")
_SYSTEMD_SAYS = re.compile(r"Start request repeated too quickly|Dependency failed|"
                           r"Control process exited|"
                           r"Main process exited, code=exited, status=2\d\d/")
_EXITED = "1"   # ExecMainCode: CLD_EXITED (waitid(2)); 2 and up are signals


def _props(state: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in state.splitlines() if "=" in line)


def unit_cause(unit: str, state: str, log: Sequence[str], before: str = "") -> Cause | None:
    """Why systemd will not run etcd, from ``systemctl show`` of the unit (UNIT_PROPERTIES)
    and the last lines of its journal; None while it may still. The unit says so when it
    cannot be loaded (masked, not found), when systemd gave up on it (failed), or when its
    main process ended with one of systemd's own exit statuses (200-254: the command could
    not be run at all, e.g. 203/EXEC, a missing binary), however often it is restarted. The
    journal's last line of systemd's own on it says the detail. ``before``: the same read
    when the wait began; an exit it already showed is an earlier try's (a resumed wait, its
    cause since undone, while systemd has yet to restart etcd), not this one's."""
    props = _props(state)
    load, active = props.get("LoadState", ""), props.get("ActiveState", "")
    status = props.get("ExecMainStatus", "0")
    stamp = props.get("ExecMainExitTimestampMonotonic", "")
    spawn = props.get("ExecMainCode") == _EXITED and status.isdigit() and \
        200 <= int(status) <= 254 and not (before and stamp == _props(before).get(
            "ExecMainExitTimestampMonotonic", ""))
    if load in ("", "loaded") and active != "failed" and not spawn:
        return None
    said = next((raw.strip() for raw in reversed(log) if _SYSTEMD_SPAWN.search(raw)), "") \
        if spawn else ""
    said = said or next((raw.strip() for raw in reversed(log) if _SYSTEMD_SAYS.search(raw)), "")
    said = said.removeprefix(f"{unit}: ")
    if load not in ("", "loaded"):
        what = f"systemd cannot load {unit} (LoadState={load})"
    elif spawn:
        what = f"systemd cannot run etcd's command of {unit} (exit status {status})"
    else:
        what = f"systemd gave up starting {unit} (Result={props.get('Result', '?')})"
    text = f"{what}: {said}" if said else what
    return Cause(said or text, text, True)
