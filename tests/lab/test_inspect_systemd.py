"""inspect on a systemd lab with etcd 3.4."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import LabHandle
from .inspect_scenario import inspect_as_ops_with_sudo, run_scenario


def test_inspect_chooses_newest_data_not_the_running_member(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.4", keys=300)
    run_scenario(lab)
    inspect_as_ops_with_sudo(lab)
