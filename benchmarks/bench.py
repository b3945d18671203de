"""execute --confirm against the floor (benchmarks/floor.py), on the same lab, same breakage.

For each shape: bring a lab up, break it, run the floor; bring the lab up again identically,
break it the same way, run ``execute --confirm``. Prints phase x floor x execute x ratio, the
CLI's peak RSS, inspect and plan times, and writes a PNG of both timelines.

Usage: python benchmarks/bench.py [--out DIR] [--shapes 3:static-pod,3:systemd,5:static-pod]
                                  [--big] [--methods force-new-cluster,snapshot]

``--methods``: each shape is run with each method against that method's own floor
(floor.Floor, floor.SnapshotFloor); the default is force-new-cluster only.

A shape may end in ``:1g`` (``--big`` adds ``3:static-pod:1g``): besides the 4000 keys, about
1 GB of values is loaded before the breakage. Backups of the members not kept run in the
background while the kept member is restored (the plan's "background" group); they are left
out of the phase table, which counts what the run waits for (the total is the run's own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "etcd-recovery")
sys.path.insert(0, str(ROOT / "benchmarks"))

from floor import Floor, SnapshotFloor  # noqa: E402


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"etcd-recovery {' '.join(args)}: {res.stderr[-2000:]}")
    return res


def timed(*args: str) -> tuple[float, int, subprocess.CompletedProcess[str]]:
    """Seconds and peak RSS (KiB, from wait4) of one CLI run."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([CLI, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return seconds, int(usage.ru_maxrss), subprocess.CompletedProcess(
            args, proc.returncode, out.read(), err.read())


ETCD_VERSION = "3.5"
BIG_VALUE = 160 * 1024      # eight per transaction: under etcd's 1.5 MiB request limit


def lab_up(d: Path, members: int, runtime: str, keys: int, big_mb: int = 0) -> None:
    if (d / "lab.json").exists():
        cli("lab", "down", "--dir", str(d))
    cli("lab", "up", "--dir", str(d), "--members", str(members), "--runtime", runtime,
        "--etcd-version", ETCD_VERSION, "--keys", str(keys))
    if big_mb:
        # In a process of its own: gRPC keeps what it sent resident (about the 1 GB), and
        # every CLI run forked from this process afterwards would report it as its peak RSS
        # (Linux keeps the largest RSS across fork and exec in ru_maxrss).
        subprocess.run([sys.executable, __file__, "--fill", str(d), str(big_mb)], check=True,
                       timeout=1800)


def fill(d: Path, big_mb: int) -> None:
    from etcd_recovery.lab.lab import Lab
    from etcd_recovery.live import EtcdClient

    lab = Lab(d)
    state = lab.state()
    tls = lab._tls()
    value = b"v" * BIG_VALUE
    count = big_mb * 1024 * 1024 // BIG_VALUE
    with EtcdClient(f"{state.hosts[0].mgmt_ip}:2379", ca_file=tls.ca, cert_file=tls.cert,
                    key_file=tls.key, timeout=60.0) as client:
        client.put_many(((f"/bench/big/{n:06d}", value) for n in range(count)), batch=8)


def breakage(d: Path, members: int) -> list[str]:
    """Lose quorum: etcd crashes on all but etcd-1 (5 members: one host gone as well)."""
    if members == 5:
        cli("lab", "kill-host", "etcd-5", "--dir", str(d))
        for n in ("etcd-3", "etcd-4"):
            cli("lab", "stop-etcd", n, "--dir", str(d))
        cli("lab", "stop-etcd", "etcd-2", "--dir", str(d))
        return [f"etcd-{i}" for i in range(1, 5)]
    for n in ("etcd-2", "etcd-3"):
        cli("lab", "stop-etcd", n, "--dir", str(d))
    return ["etcd-1", "etcd-2", "etcd-3"]


def kept_of(d: Path) -> str:
    plan = json.loads(cli("plan", "-i", str(d / "inventory.yaml"), "-o", "json").stdout)
    return str(plan["chosen"])


# the snapshot method's steps grouped into SnapshotFloor's phases
SNAPSHOT_PHASES = {"preflight": "stop", "lock": "stop", "fence": "stop", "backup": "backup",
                   "log-check": "snapshot", "align-commit": "snapshot",
                   "force-new-cluster": "snapshot", "stop": "snapshot", "snapshot": "snapshot",
                   "etcdutl": "copy", "send": "copy", "restore": "restore", "start": "start",
                   "cluster-up": "start"}


# execute's steps grouped into the floor's phases
def phase_of(step: str, method: str = "force-new-cluster") -> str:
    kind = step.split(":")[0]
    if method == "snapshot":
        return SNAPSHOT_PHASES.get(kind, "hashkv")
    if kind in ("preflight", "lock", "fence"):
        return "stop"
    if kind in ("backup", "align-commit"):
        return "backup"
    if kind == "force-new-cluster":
        return "force-new-cluster"
    if kind in ("remove-flag", "remove-stale-members"):
        return "restart"
    if kind in ("move-aside", "learner-add", "start-learner", "promote"):
        return f"peer {step.split(':')[1]}" if kind != "move-aside" else "peers"
    return "hashkv"


def shape(members: int, runtime: str, keys: int, d: Path, big_mb: int = 0,
          method: str = "force-new-cluster") -> dict[str, Any]:
    lab_up(d, members, runtime, keys, big_mb)
    version = json.loads((d / "lab.json").read_text())["etcd_version"]
    reachable = breakage(d, members)
    kept = kept_of(d)
    floor = dict((SnapshotFloor if method == "snapshot" else Floor)(d, kept).run(reachable))
    lab_up(d, members, runtime, keys, big_mb)
    breakage(d, members)
    inv = str(d / "inventory.yaml")
    flags = ["--method", method, "--etcdutl", f"/opt/etcd-{version}/etcdutl"] \
        if method == "snapshot" else []
    t_inspect, _, _ = timed("inspect", "-i", inv, "-o", "json")
    t_plan, rss_plan, planned = timed("plan", "-i", inv, *flags, "-o", "json")
    groups = {st["id"]: st["group"] for st in json.loads(planned.stdout)["steps"]}
    seconds, rss, res = timed("execute", "-i", inv, "--confirm", *flags, "-o", "json")
    if res.returncode != 0:
        raise RuntimeError(f"execute failed ({res.returncode}): {res.stderr[-3000:]}")
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    execute: dict[str, float] = {}
    together: dict[tuple[str, str], float] = {}  # steps run at the same time: the longest
    for s in summary["steps"]:
        p = phase_of(s["id"], method)
        if p == "peers":  # all move-asides at once: charged to the first peer
            p = next((f"peer {n}" for n in reachable if n != kept), "peers")
        group = groups.get(s["id"])
        if group == "background":
            continue  # while the kept member is restored: the run does not wait for it
        if group is not None:  # run at the same time: the longest counts
            together[(p, group)] = max(together.get((p, group), 0.0), s["seconds"])
        else:
            execute[p] = execute.get(p, 0.0) + s["seconds"]
    for (p, _), sec in together.items():
        execute[p] = execute.get(p, 0.0) + sec
    execute["total"] = summary["total_s"]
    steps = [(s["id"], s["seconds"]) for s in summary["steps"]
             if groups.get(s["id"]) != "background"]
    timeline = journal_timeline(d / ".etcd-recovery" / f"{summary['run_id']}.journal.jsonl")
    size = f", {big_mb // 1024} GB of values" if big_mb >= 1024 else ""
    return {"shape": f"{members} members, {runtime}, etcd {version}{size}, {method}",
            "method": method, "kept": kept,
            "floor": floor, "groups": groups,
            "execute": execute,
            "wall_s": seconds, "rss_kib": rss, "rss_plan_kib": rss_plan,
            "inspect_s": t_inspect, "plan_s": t_plan, "steps": steps,
            "floor_phases": list(floor.items()), "timeline": timeline}


def journal_timeline(path: Path) -> list[tuple[str, float, float]]:
    """Each step's start and end, in seconds from the run's start, from its journal: where
    the run waited between steps (for a background step) shows as a gap."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    t0 = next(e["ts"] for e in events if e["event"] == "run-start")
    start: dict[str, float] = {}
    out = []
    for e in events:
        if e["event"] == "step-start":
            start[e["step"]] = e["ts"] - t0
        elif e["event"] == "step-done" and e["step"] in start:
            out.append((e["step"], round(start[e["step"]], 2), round(e["ts"] - t0, 2)))
    return sorted(out, key=lambda x: x[1])


def table(r: dict[str, Any]) -> str:
    rows = [f"### {r['shape']}", "", "| phase | floor | execute | ratio |", "|---|---|---|---|"]
    for p, f in r["floor"].items():
        e = r["execute"].get(p, 0.0)
        rows.append(f"| {p} | {f:.2f} s | {e:.2f} s | {e / f:.2f} |" if f > 0.005
                    else f"| {p} | {f:.2f} s | {e:.2f} s | - |")
    rows += ["", "execute, step by step: " + ", ".join(f"{sid} {sec:.2f}"
                                                   for sid, sec in r["steps"])]
    rows += ["", "timeline (s from the run's start): " + ", ".join(
        f"{sid} {a:.1f}-{b:.1f}" for sid, a, b in r.get("timeline", []))]
    rows += ["", f"execute wall clock {r['wall_s']:.1f} s; peak RSS {r['rss_kib'] / 1024:.0f} "
             f"MiB (plan {r['rss_plan_kib'] / 1024:.0f} MiB); inspect {r['inspect_s']:.2f} s, "
             f"plan {r['plan_s']:.2f} s on the broken lab", ""]
    return "\n".join(rows)


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(11, 2.4 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        for row, (_label, items) in enumerate((("floor", [p for p in r["floor_phases"]
                                                         if p[0] != "total"]),
                                              ("execute", r["steps"]))):
            x = end = 0.0
            prev: str | None = None
            for i, (name, sec) in enumerate(items):
                kind = name.split(":")[0]
                group = r.get("groups", {}).get(name) if row else None
                together = group is not None and group == prev
                if not together:
                    x = end
                ax.barh(row + (0.25 * (i % 3) - 0.25 if group else 0),
                        sec, left=x, height=0.3 if group else 0.8, color=f"C{i % 10}",
                        edgecolor="white")
                if sec > 0.6 and not together:
                    ax.text(x + sec / 2, row, kind, ha="center", va="center", fontsize=6,
                            rotation=90)
                end = max(end, x + sec)
                prev = group
        ax.set_yticks([0, 1], ["floor", "execute"])
        ax.set_title(r["shape"], fontsize=9)
        ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="execute --confirm against an expert's hand "
        "procedure (benchmarks/floor.py), on the same lab, broken the same way")
    parser.add_argument("--shapes", default="3:static-pod,3:systemd,5:static-pod",
                        help="MEMBERS:RUNTIME[:1g],... (:1g loads about 1 GB of values)")
    parser.add_argument("--methods", default="force-new-cluster",
                        help="force-new-cluster,snapshot: each shape with each method")
    parser.add_argument("--big", action="store_true", help="add 3:static-pod:1g")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks",
                        help="where bench.json and bench.png go")
    parser.add_argument("--fill", nargs=2, metavar=("LAB_DIR", "MB"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.fill:
        fill(Path(opts.fill[0]), int(opts.fill[1]))
        return
    out: Path = opts.out
    shapes: str = opts.shapes + (",3:static-pod:1g" if opts.big else "")
    methods: list[str] = opts.methods.split(",")
    bad = [m for m in methods if m not in ("force-new-cluster", "snapshot")]
    if bad:
        parser.error(f"--methods: unknown method(s) {', '.join(bad)}")
    keys = 4000
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    results = []
    try:
        for item in shapes.split(","):
            n, runtime, *size = item.split(":")
            big_mb = 1024 if size == ["1g"] else 0
            for method in methods:
                d = work / f"lab-{n}-{runtime}{'-big' if big_mb else ''}-{method}"
                r = shape(int(n), runtime, keys, d, big_mb, method)
                print(table(r), flush=True)
                results.append(r)
                cli("lab", "down", "--dir", str(d))
    finally:
        for d in work.glob("lab-*"):
            subprocess.run([CLI, "lab", "down", "--dir", str(d)], capture_output=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    chart(results, out / "bench.png")
    print(f"chart: {out / 'bench.png'}; figures: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
