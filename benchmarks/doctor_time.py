"""How long `doctor` takes on the lab: 3 and 5 members, healthy and with one host down.

For each shape: bring a lab up, run ``doctor -o json`` a few times (the CLI's wall time, the
report's own elapsed_s and its timings of each reading), then kill one host's container and
run it again the same number of times. Prints a table and writes doctor-time.json.

Usage: python benchmarks/doctor_time.py [--out DIR] [--shapes 3:static-pod,5:static-pod]
                                        [--runs 3] [--etcd-version 3.6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLI = str(Path(sys.executable).parent / "etcd-recovery")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=900)
    if check and res.returncode != 0:
        raise RuntimeError(f"etcd-recovery {' '.join(args)}: {res.stderr[-2000:]}")
    return res


def doctor_runs(lab_dir: Path, runs: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        res = cli("doctor", "-i", str(lab_dir / "inventory.yaml"), "-o", "json", check=False)
        wall = time.monotonic() - t0
        report = json.loads(res.stdout)
        named = {status: sorted({c["check"] for c in report["checks"] if c["status"] == status})
                 for status in ("warn", "fail")}
        out.append({"wall_s": round(wall, 2), "elapsed_s": report["elapsed_s"],
                    "exit": res.returncode, "timings_s": report.get("timings_s", {}),
                    "warned": named["warn"], "failed": named["fail"]})
    return out


def shape(spec: str, runs: int, version: str) -> dict[str, Any]:
    members, runtime = spec.split(":")
    with tempfile.TemporaryDirectory(prefix="doctor-time-") as tmp:
        lab_dir = Path(tmp) / "lab"
        cli("lab", "up", "--dir", str(lab_dir), "--members", members, "--runtime", runtime,
            "--etcd-version", version)
        try:
            healthy = doctor_runs(lab_dir, runs)
            cli("lab", "kill-host", "etcd-2", "--dir", str(lab_dir))
            down = doctor_runs(lab_dir, runs)
        finally:
            cli("lab", "down", "--dir", str(lab_dir), check=False)
    return {"shape": spec, "etcd": version, "healthy": healthy, "one_host_down": down}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--shapes", default="3:static-pod,5:static-pod")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--etcd-version", default="3.6")
    args = ap.parse_args()
    results = [shape(s, args.runs, args.etcd_version) for s in args.shapes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "doctor-time.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'shape':<14} {'state':<14} {'wall s (median)':>16} {'report s':>9} exit")
    for r in results:
        for state in ("healthy", "one_host_down"):
            rows = r[state]
            print(f"{r['shape']:<14} {state:<14} "
                  f"{statistics.median(x['wall_s'] for x in rows):>16.2f} "
                  f"{statistics.median(x['elapsed_s'] for x in rows):>9.2f} "
                  f"{','.join(str(x['exit']) for x in rows)}")


if __name__ == "__main__":
    main()
