"""inspect on a static-pod lab with etcd 3.5."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import LabHandle
from .inspect_scenario import run_scenario


def test_inspect_chooses_newest_data_not_the_running_member(
        make_lab: Callable[..., LabHandle]) -> None:
    run_scenario(make_lab(members=3, runtime="static-pod", version="3.6-newest", keys=300))
