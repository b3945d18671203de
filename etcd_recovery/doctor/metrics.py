"""etcd's ``/metrics`` (the Prometheus text format) read for the few families doctor reports,
and their percentiles. Pure: text in, values out.

The families and the percentile rule are etcd-diagnosis' (vmware/etcd-diagnosis,
commands/report/plugins/metrics/plugin.go at 068703ca: ``metricsNames``, ``percentileOptions``
99, 95, 90, 85, 80, 75, 50, and ``percentileFromHistogram``: the target rank is
``uint64(count * q)`` (at least 1), found in the cumulative buckets and interpolated linearly
inside the bucket that holds it). Like etcd-diagnosis, the histograms are read as they stand:
counts since etcd started, not a rate over the last minutes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WAL_FSYNC = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT = "etcd_disk_backend_commit_duration_seconds"
APPLY = "etcd_server_apply_duration_seconds"
RANGE = "etcd_server_range_duration_seconds"
PEER_RTT = "etcd_network_peer_round_trip_time_seconds"
RSS = "process_resident_memory_bytes"
FAMILIES = (WAL_FSYNC, BACKEND_COMMIT, APPLY, RANGE, PEER_RTT, RSS)
PERCENTILES = (99, 95, 90, 85, 80, 75, 50)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Histogram:
    labels: tuple[tuple[str, str], ...]   # without "le"
    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), ascending
    count: int
    total: float

    def percentile(self, p: int) -> float:
        """etcd-diagnosis' ``percentileFromHistogram`` for quantile ``p``/100 (0 when the
        histogram is empty; +Inf when the rank falls in the +Inf bucket)."""
        if self.count == 0 or not self.buckets:
            return 0.0
        target = max(1, int(self.count * p / 100))
        prev_count, prev_upper = 0, 0.0
        for upper, cum in self.buckets:
            if cum >= target:
                inside = cum - prev_count
                if inside == 0:
                    return upper
                return prev_upper + (target - prev_count) / inside * (upper - prev_upper)
            prev_count, prev_upper = cum, upper
        return self.buckets[-1][0]

    def percentiles(self) -> dict[int, float]:
        return {p: self.percentile(p) for p in PERCENTILES}


@dataclass
class _Acc:
    buckets: list[tuple[float, int]] = field(default_factory=list)
    count: int = 0
    total: float = 0.0


def _value(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse(text: str, families: Sequence[str] = FAMILIES
          ) -> dict[str, list[Histogram] | float]:
    """The wanted families found in ``text``: a histogram family as its samples (one per
    label set, e.g. per peer for the round trip time), a gauge as its value. A family that
    this etcd does not export (3.5 has no range histogram) is left out."""
    wanted = set(families)
    gauges: dict[str, float] = {}
    hist: dict[tuple[str, tuple[tuple[str, str], ...]], _Acc] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels_text, raw = m.group(1), m.group(3) or "", m.group(4)
        value = _value(raw)
        if value is None:
            continue
        if name in wanted:
            gauges[name] = value
            continue
        base, _, suffix = name.rpartition("_")
        if base not in wanted or suffix not in ("bucket", "count", "sum"):
            continue
        labels = dict(_LABEL.findall(labels_text))
        le = labels.pop("le", None)
        key = (base, tuple(sorted(labels.items())))
        entry = hist.setdefault(key, _Acc())
        if suffix == "bucket" and le is not None:
            bound = _value(le)
            if bound is not None:
                entry.buckets.append((bound, int(value)))
        elif suffix == "count":
            entry.count = int(value)
        elif suffix == "sum":
            entry.total = value
    out: dict[str, list[Histogram] | float] = dict(gauges)
    for (base, label_set), entry in sorted(hist.items(), key=lambda kv: kv[0]):
        h = Histogram(label_set, tuple(sorted(entry.buckets)), entry.count, entry.total)
        found = out.setdefault(base, [])
        if isinstance(found, list):
            found.append(h)
    return out


def worst(samples: Sequence[Histogram]) -> Histogram | None:
    """The sample with the highest p99 (the slowest peer), None when there is none."""
    live = [h for h in samples if h.count > 0]
    if not live:
        return samples[0] if samples else None
    return max(live, key=lambda h: (h.percentile(99), h.count))


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def as_histograms(found: Mapping[str, list[Histogram] | float], name: str
                  ) -> list[Histogram] | None:
    v = found.get(name)
    return v if isinstance(v, list) else None
