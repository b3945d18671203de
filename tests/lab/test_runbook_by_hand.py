"""The Markdown runbook is a procedure a person can paste: one recovery done by running its
blocks in bash (plain ssh and etcdctl), with no tool code in the loop, then verified; once by
the default method, once by the snapshot method (its copies, etcdutl restores, members
started in turn and the revision checks, all as shell)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from .conftest import LabHandle, cli
from .recovery_scenario import check_recovered, inventory, lose_quorum


@pytest.mark.parametrize(("runtime", "method"), [("static-pod", "force-new-cluster"),
                                                 ("systemd", "snapshot")])
def test_recovery_by_pasting_the_runbook(make_lab: Callable[..., LabHandle], runtime: str,
                                         method: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version="3.6-newest", keys=500)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=120)
    md = cli("plan", "-i", inventory(lab), "--method", method, "-o", "markdown").stdout
    blocks = re.findall(r"```sh\n(.*?)```", md, re.S)
    assert len(blocks) > 10
    tool = re.compile(r"(^|[;&|(`$]\s*)(\S*/)?etcd-recovery\s+(inspect|plan|execute|verify|"
                      r"rejoin|lab|inventory)\b", re.M)
    assert not any(tool.search(b) for b in blocks), "the runbook calls the tool"
    script = "\n".join(["set -euo pipefail", f"export PATH={lab.state.etcd_bin}:$PATH",
                        *blocks, "echo RUNBOOK-DONE"])
    (lab.dir / "runbook.sh").write_text(script)
    res = subprocess.run(["bash", str(lab.dir / "runbook.sh")], capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL, cwd=lab.dir)
    assert res.returncode == 0 and "RUNBOOK-DONE" in res.stdout, \
        f"rc {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=500, writes=120)
