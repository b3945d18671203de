"""Disruptions during a recovery (systemd, etcd 3.5): a second operator's run at the same
time, the SSH connection dropping in the middle of a step, and a host rebooting during a
learner add. Each ends in a refused second run or a described stop that --resume finishes.
The SSH drop waits for the state it needs, etcd-1's backup command running on the host (a
DB large enough for a backup of seconds); that command goes on after the drop, and the run
that resumes waits for it instead of starting a second backup beside it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from .conftest import CLI, LabHandle, cli
from .recovery_scenario import (
    check_recovered,
    execute,
    execute_until,
    inventory,
    journal_events,
    load_values,
    lose_quorum,
    wait_host_command,
)


def wait_event(lab: LabHandle, event: str, step: str, proc: subprocess.Popen[bytes],
               timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(e["event"] == event and e["step"] == step for e in journal_events(lab)):
        assert proc.poll() is None, "execute ended early"
        assert time.monotonic() < deadline, f"no {event} {step}"
        time.sleep(0.02)


def test_concurrent_run_ssh_drop_and_reboot(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5-old", keys=500)
    load_values(lab, "etcd-1", 256)   # a backup that lasts seconds, to drop SSH in
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    inv = inventory(lab)
    # The first operator's run holds the lock on every host (and is killed there).
    execute_until(lab, "step-done", "lock")
    # Another operator, another machine (journal dir): refused by the lock on the hosts,
    # with nothing changed.
    other = cli("execute", "-i", inv, "--confirm", "--journal-dir",
                str(lab.dir / "other-operator"), check=False, timeout=300)
    assert other.returncode == 3, other.stderr
    assert "another recovery holds the lock" in other.stderr
    first = subprocess.Popen([CLI, "execute", "-i", inv, "--confirm", "--resume"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The SSH connection to etcd-1 drops while its backup runs.
        wait_event(lab, "step-start", "backup:etcd-1", first)
        _, run, _ = wait_host_command(lab, "etcd-1", "backup:etcd-1", first)
        lab.lab.exec(lab.state.host("etcd-1"), ["pkill", "-f", "sshd: root@"], check=False)
        # Either the run stops, described, or it reconnects and goes on; in that case it is
        # killed in the middle of etcd-3's learner add.
        deadline = time.monotonic() + 300
        while first.poll() is None and not any(
                e["event"] == "step-start" and e["step"] == "start-learner:etcd-3"
                for e in journal_events(lab)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        reconnected = first.poll() is None
        if reconnected:
            first.kill()
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    if not reconnected:
        assert first.returncode == 1 and b"Traceback" not in err, err
        assert b"--resume" in err, err
        execute_until(lab, "step-start", "start-learner:etcd-3", "--resume")
    # The host of the returning member reboots in the middle of its learner add.
    lab.lab.client.containers.get(lab.state.host("etcd-3").container).restart(timeout=5)
    lab.lab.wait_ssh(lab.state, ["etcd-3"], timeout=60)
    summary = json.loads(execute(lab, "--resume").stdout)
    assert summary["ok"], summary
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=500, writes=100)
    # One backup, whole: never two at once in the same directory.
    code, out = lab.lab.exec(lab.state.host("etcd-1"), [
        "sh", "-c", f"cd /var/lib/etcd-recovery/{run}/backup && b2sum --quiet -c B2SUMS && "
                    "ls -A"], check=False)
    assert code == 0 and out.split() == ["B2SUMS", "data", "etcd.env"], out
