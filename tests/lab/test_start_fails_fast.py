"""When etcd exits where the plan starts it, the run fails within seconds with etcd's own
fatal line, on both runtimes. The cause is made after the preflight passed (which refuses it
when it is there at the start: test_start_checks.py): the run is killed just before the kept
member's force-new-cluster, its peer address is taken off its host, and the resumed run
starts etcd there. It must fail fast, quoting etcd's `bind: cannot assign requested address`
in its error and its journal, naming the step and how to resume; once the address is back,
the next --resume completes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from etcd_recovery.errors import EXIT_FAILED

from .conftest import LabHandle, cli
from .recovery_scenario import check_recovered, execute_until, inventory, journal_events

BIND = "bind: cannot assign requested address"


@pytest.mark.parametrize(("runtime", "version"), [("static-pod", "3.6-newest"),
                                                  ("systemd", "3.5-old")])
def test_etcd_that_exits_at_start_fails_the_step_with_its_own_words(
        make_lab: Callable[..., LabHandle], runtime: str, version: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version=version, keys=100)
    inv = inventory(lab)
    for gone in ("etcd-2", "etcd-3"):
        cli("lab", "kill-host", gone, "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))
    plan = json.loads(cli("plan", "-i", inv, "-o", "json").stdout)
    ids = [s["id"] for s in plan["steps"]]
    fnc = next(i for i, s in enumerate(ids) if s.startswith("force-new-cluster:"))
    execute_until(lab, "step-done", ids[fnc - 1])
    cli("lab", "partition", "etcd-1", "--dir", str(lab.dir))
    try:
        t0 = time.monotonic()
        res = cli("execute", "-i", inv, "--confirm", "--resume", check=False, timeout=200)
        took = time.monotonic() - t0
    finally:
        cli("lab", "heal", "etcd-1", "--dir", str(lab.dir))
    said = res.stdout + res.stderr
    assert res.returncode == EXIT_FAILED, said[-2000:]
    assert BIND in said and f"step {ids[fnc]} failed" in said and "--resume" in said, said
    assert "Traceback" not in said
    # The start itself (the supervisor's first try) comes within a second or two of the
    # resume; the wait's timeout is a minute and more.
    assert took < 20, (took, said[-1000:])
    failed = [e for e in journal_events(lab) if e["event"] == "step-failed"]
    assert failed and failed[-1]["step"] == ids[fnc], failed
    assert BIND in failed[-1]["detail"]["error"], failed
    print(f"{runtime}: resume to the failure in {took:.1f} s")
    done = cli("execute", "-i", inv, "--confirm", "--resume", "-o", "json", check=False,
               timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check_recovered(lab, ["etcd-1"], keys=100, writes=0)
