"""Recovery on a 3-member systemd lab, etcd 3.4."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import LabHandle
from .recovery_scenario import run_recovery


def test_recovery_three_members_two_lost(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.4", keys=1000)
    summary = run_recovery(lab, members=3, keys=1000)
    assert summary["total_s"] < 120
