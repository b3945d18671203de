"""Why did etcd exit? Pure: the last lines of its log in, the line that says why out.

etcd logs with zap as JSON lines since 3.5 (3.4 too with ``--logger=zap``):
``{"level":"fatal","ts":...,"caller":"etcdmain/etcd.go:183","msg":"discovery failed",
"error":"listen tcp 172.31.16.11:2380: bind: cannot assign requested address",...}``
(``level`` one of debug, info, warn, error, dpanic, panic, fatal; read at v3.6.16,
server/etcdmain/etcd.go and client/pkg/logutil/zap.go). 3.4's default capnslog writes
``2026-12-03 16:49:10.973370 C | etcdmain: listen tcp ...: bind: ...`` (C: critical,
P: panic). A Go panic that zap did not catch prints ``panic: ...`` then the goroutine dump.

The lines may come with a prefix: journalctl's ``Dec 03 16:49:10 host etcd[812]: ``, a
container runtime's ``2026-12-03T16:49:10.88Z stderr F ``; each line's JSON is found where it
starts. The cause is the last fatal line: a supervisor restarts etcd, and what the newest
attempt said is what matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

FATAL_LEVELS = {"fatal", "panic", "dpanic"}
_CAPNSLOG = re.compile(r"\s([CP]) \| (.+)$")
_PANIC = re.compile(r"(?:^|\s)(panic: .+)$")
# What a live etcd says when it cannot form a cluster: the wait's last word, when it runs out.
_STALL_MSGS = ("prober detected unhealthy status", "failed to reach the peer URL",
               "dial tcp", "lost TCP streaming connection", "failed to publish local member",
               "is starting a new election", "request cluster ID mismatch")


@dataclass(frozen=True)
class Cause:
    line: str           # the line as etcd wrote it (without a log collector's prefix)
    text: str           # what it says, short: "discovery failed: listen tcp ...: bind: ..."
    fatal: bool

    def quote(self, limit: int = 300) -> str:
        return self.text if len(self.text) <= limit else self.text[:limit - 3] + "..."


def _json_of(line: str) -> dict[str, object] | None:
    start = line.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(line[start:])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(entry: dict[str, object]) -> str:
    msg = str(entry.get("msg", ""))
    err = entry.get("error")
    return f"{msg}: {err}" if err else msg


def fatal_cause(lines: Iterable[str]) -> Cause | None:
    """The last line of the log that says why etcd exited (None: no such line)."""
    found: Cause | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        entry = _json_of(line)
        if entry is not None:
            if str(entry.get("level", "")).lower() in FATAL_LEVELS:
                found = Cause(line[line.find("{"):], _text(entry), True)
            continue
        m = _CAPNSLOG.search(line)
        if m:
            found = Cause(line, m.group(2).strip(), True)
            continue
        m = _PANIC.search(line)
        # zap's panic entry is followed by the runtime's "panic: <msg>": the same exit, said
        # better by the entry (which has the error too).
        if m and not (found is not None and str(found.text).split(":")[0] in m.group(1)):
            found = Cause(m.group(1), m.group(1), True)
    return found


def stall_cause(lines: Iterable[str]) -> Cause | None:
    """What a running etcd that will not become healthy said last about its peers or its
    leader (a warning, not fatal): a peer unreachable at an address, no leader."""
    found: Cause | None = None
    for raw in lines:
        entry = _json_of(raw)
        if entry is None:
            continue
        text = _text(entry)
        if any(s in text for s in _STALL_MSGS):
            extra = entry.get("address") or entry.get("remote-peer-id")
            found = Cause(raw[raw.find("{"):], f"{text} ({extra})" if extra else text, False)
    return found
