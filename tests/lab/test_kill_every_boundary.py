"""The CLI is SIGKILLed at every step boundary in turn (right after the journal says a step
is done); each time `execute --resume` takes over, and the last one completes."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import LabHandle
from .test_kill_every_step import kill_at_every_step


def test_kill_at_every_step_boundary_then_resume(make_lab: Callable[..., LabHandle]) -> None:
    kill_at_every_step(make_lab(members=3, runtime="static-pod", version="3.7-newest", keys=500),
                       "step-done")
