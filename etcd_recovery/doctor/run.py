"""doctor end to end: check the names asked for, gather, judge, report."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import UsageError
from ..inventory import Inventory
from ..transport.factory import TransportFactory, ssh_transport
from .checks import CHECK_NAMES, run_checks
from .gather import gather
from .model import Report


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names given to --check, each one a known check (UsageError otherwise)."""
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown:
        raise UsageError(f"--check {unknown[0]}: no such check; the checks are "
                         + ", ".join(CHECK_NAMES))
    return tuple(dict.fromkeys(names))


def doctor(inv: Inventory, names: Sequence[str] = (),
           factory: TransportFactory = ssh_transport) -> Report:
    wanted = check_names(names)
    started = time.time()
    t0 = time.monotonic()
    got = gather(inv, wanted, factory, plan=not wanted or "rehearse-plan" in wanted)
    checks = run_checks(got.readings, wanted)
    return Report(cluster=inv.name, checks=checks, elapsed_s=time.monotonic() - t0,
                  started_at=started, timings=got.timings)
