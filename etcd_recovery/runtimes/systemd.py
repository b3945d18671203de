"""The kubespray / bare-metal layout: etcd.service reads its flags from an environment file."""

from __future__ import annotations

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
