"""What a run of a plan returns: how long each step took and where the run stopped.

Plain values, below both the executor that fills them and the renderers that show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepTiming:
    id: str
    seconds: float
    skipped: bool = False


@dataclass
class Summary:
    run_id: str
    ok: bool
    total_s: float = 0.0
    steps: list[StepTiming] = field(default_factory=list)
    stopped_at: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "ok": self.ok, "total_s": round(self.total_s, 3),
                "stopped_at": self.stopped_at, "message": self.message,
                "steps": [{"id": s.id, "seconds": round(s.seconds, 3), "skipped": s.skipped}
                          for s in self.steps]}
