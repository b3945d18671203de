"""The CLI is SIGKILLed in the middle of a backup that takes seconds: the backup's command
goes on on the host (closing the SSH channel does not stop it). `execute --resume`, started
at once, waits for it, says so, and goes on; the backup is byte for byte the source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

from .conftest import CLI, LabHandle
from .recovery_scenario import (
    check_recovered,
    host_command,
    inventory,
    journal_events,
    load_values,
    lose_quorum,
    wait_host_command,
)

BIG_MB = 384   # etcd-1's data dir: about 0.8 GB (db and WAL), a backup of seconds here


def test_cli_killed_mid_backup_then_resumed_at_once(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5-newest", keys=200)
    big = load_values(lab, "etcd-1", BIG_MB)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    h1, h3 = lab.state.host("etcd-1"), lab.state.host("etcd-3")
    # etcd-1's etcd is down (the lab keeps it down): its data dir holds still from here on,
    # so a copy taken now is what its backup must equal.
    ref = "/root/etcd-1-before-the-run"
    lab.lab.exec(h1, ["cp", "-a", "/var/lib/etcd", ref])

    before = len(journal_events(lab))
    first = subprocess.Popen([CLI, "execute", "-i", inventory(lab), "--confirm"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        pid, run, step = wait_host_command(lab, "etcd-1", "backup:etcd-1", first)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    t_kill = time.monotonic()
    # The CLI is gone; its backup command is not.
    assert host_command(lab, "etcd-1") == (pid, run, "backup:etcd-1")
    events = journal_events(lab)[before:]
    assert [e for e in events if e["event"] == "run-start"][0]["detail"]["chosen"] == "etcd-1"
    assert not any(e["event"] == "step-done" and e["step"] == "backup:etcd-1" for e in events)

    # The earlier command is held (SIGSTOP to its process group: the guard runs it under
    # setsid) until the resumed run says it waits for it, so that it cannot end first however
    # fast this machine copies; then it goes on (SIGCONT) and the resumed run with it.
    code, out = lab.lab.exec(h1, ["kill", "-STOP", "--", f"-{pid}"], check=False)
    assert code == 0, out
    mark = len(journal_events(lab))
    proc = subprocess.Popen([CLI, "execute", "-i", inventory(lab), "--confirm", "--resume",
                             "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(e["event"] == "waiting-for-earlier"
                      for e in journal_events(lab)[mark:]):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the resumed run never waited for the backup"
            time.sleep(0.05)
    finally:
        lab.lab.exec(h1, ["kill", "-CONT", "--", f"-{pid}"], check=False)
    stdout, stderr = proc.communicate(timeout=900)
    resumed = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    t_done = time.monotonic()
    summary = json.loads(resumed.stdout)
    assert summary["ok"], (summary, resumed.stderr)
    said = " ".join(resumed.stderr.split())
    assert (f"etcd-1: waiting for the backup started by an earlier run (pid {pid}) to end"
            in said), resumed.stderr
    # The journal says so too, and the step's command ran again only once the earlier had
    # ended (it then found the copy complete, with its B2SUMS, and checked it).
    events = journal_events(lab)[before:]
    kinds = [(e["event"], e["step"], e["detail"].get("action")) for e in events]
    resume_at = kinds.index(("resume", None, None))
    waited = kinds.index(("waiting-for-earlier", "backup:etcd-1", None), resume_at)
    ended = kinds.index(("earlier-ended", "backup:etcd-1", None), waited)
    rerun = kinds.index(("action-start", "backup:etcd-1", 1), resume_at)
    assert waited < ended < rerun
    assert events[waited]["detail"]["pid"] == pid
    assert host_command(lab, "etcd-1") is None

    # Byte for byte: the backup against its B2SUMS and against the copy taken before the run.
    bdir = f"/var/lib/etcd-recovery/{run}/backup"
    code, out = lab.lab.exec(h1, ["sh", "-c", f'cd {bdir} && b2sum --quiet -c B2SUMS && '
                                  f'diff -r {ref} data && ls -A && stat -c %a data'],
                             check=False)
    assert code == 0, out
    assert out.split() == ["B2SUMS", "data", "etcd.env", "700"], out   # nothing nested
    # etcd-3's backup (in the background, after the kill) against its old data, moved aside.
    code, out = lab.lab.exec(h3, ["sh", "-c", f"cd {bdir} && b2sum --quiet -c B2SUMS && "
                                  f"diff -r data/member /var/lib/etcd-recovery/{run}/"
                                  "member.moved"], check=False)
    assert code == 0, out
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=200, writes=100)
    print(f"\n{big} values of 160 KiB; the resumed run waited "
          f"{events[ended]['detail']['seconds']:.1f} s for the earlier backup and took "
          f"{t_done - t_kill:.1f} s in all")
