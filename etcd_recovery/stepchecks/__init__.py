"""Each step kind's checks, by recovery method: the checkers of the preconditions
``conditions.KIND_CONDITIONS`` names, the finishers that check a step after its actions, and
the hooks that read one command's result. The executor interprets these tables; adding a
method adds a module here (and its planner in :mod:`..plan`), nothing in the executor."""

from __future__ import annotations

from ..plan import StepKind
from . import common, force_new_cluster, rejoin, snapshot
from .base import Aftermath, AfterRun, Checker, Finisher, Runner, Skipper, merged

CHECKS: dict[str, Checker] = merged(common.CHECKS, force_new_cluster.CHECKS, rejoin.CHECKS,
                                    snapshot.CHECKS)
FINISH: dict[StepKind, Finisher] = merged(common.FINISH, force_new_cluster.FINISH,
                                          snapshot.FINISH)
AFTER_RUN: dict[StepKind, AfterRun] = merged(common.AFTER_RUN, snapshot.AFTER_RUN)
AFTERMATH: dict[StepKind, Aftermath] = merged(force_new_cluster.AFTERMATH)
SKIPS: tuple[Skipper, ...] = snapshot.SKIPS

__all__ = ["AFTERMATH", "AFTER_RUN", "CHECKS", "FINISH", "SKIPS", "Aftermath", "AfterRun",
           "Checker", "Finisher", "Runner", "Skipper"]
