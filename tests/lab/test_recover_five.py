"""Recovery of 5-member labs with 3 members lost: static-pod on the newest etcd 3.7,
systemd (kubespray's layout) on the newest 3.6."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import LabHandle
from .recovery_scenario import run_recovery


@pytest.mark.parametrize(("runtime", "version"), [("static-pod", "3.7-newest"),
                                                     ("systemd", "3.6-newest")])
def test_recovery_five_members_three_lost(make_lab: Callable[..., LabHandle], runtime: str,
                                          version: str) -> None:
    lab = make_lab(members=5, runtime=runtime, version=version, keys=500)
    summary = run_recovery(lab, members=5, keys=500)
    assert summary["total_s"] < 180
