"""The recovery plan: what ``plan`` shows and ``execute`` runs.

- :mod:`.steps`: the plan's data (steps, their kinds and parameters, the strict JSON loader,
  the diff between two plans, the state fingerprint);
- :mod:`.scripts`: the host shell scripts steps run, as named units;
- :mod:`.common`: the steps every method shares (lock, fence, backup, verify, unlock);
- one module per recovery method's planner, each returning a :class:`Plan`:
  :mod:`.force_new_cluster` (the default), :mod:`.snapshot` (``--method snapshot`` and
  ``--from-snapshot``), and :mod:`.rejoin` (one member back into a healthy cluster).

The package itself re-exports the plan's data, which every reader of a plan needs.
"""

from .steps import (
    BACKGROUND,
    PLAN_VERSION,
    STATE_DIR,
    Plan,
    Step,
    StepKind,
    fingerprint,
    run_dir,
)

__all__ = ["BACKGROUND", "PLAN_VERSION", "STATE_DIR", "Plan", "Step", "StepKind", "fingerprint",
           "run_dir"]
