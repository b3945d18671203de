"""The command line's own surface: version, help, completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from etcd_recovery import __version__

CLI = str(Path(sys.executable).parent / "etcd-recovery")


def test_version_prints_the_version() -> None:
    res = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"etcd-recovery {__version__}"


def test_no_command_shows_help_and_completion_is_offered() -> None:
    res = subprocess.run([CLI], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Usage: etcd-recovery" in res.stdout
    assert "inspect" in res.stdout and "execute" in res.stdout
    res = subprocess.run([CLI, "--show-completion", "bash"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "SHELL": "/bin/bash"})
    assert res.returncode == 0 and "complete" in res.stdout and "etcd-recovery" in res.stdout
