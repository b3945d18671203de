"""Benchmark: how long checking a big snapshot file takes, against ``etcdutl snapshot status``.

Starts one etcd (a build named by role, ``/opt/etcd-<version>``) on 127.0.0.1 with a larger
``--quota-backend-bytes``, writes about ``--size`` bytes of values through the gRPC client
(etcd_recovery.live.EtcdClient, ``--value-size`` bytes each, 1 MiB per Txn), saves a snapshot
with the build's ``etcdctl snapshot save``, stops etcd and then times, each in a process of its
own (wall time; peak RSS by GNU time), ``--runs`` times:

* ``read_snapshot``: sha256 check plus status (etcd_recovery.formats.snapshot);
* ``read_snapshot(check_hash=False)``: status only;
* the sha256 check only (``sha256_of``);
* ``etcdutl snapshot status -w json`` (whose figures the reader's must equal: checked);
* ``sha256sum`` of the file, for scale.

The file is read from the page cache after the first run (nothing drops caches: that would
touch the whole machine). Run from the repository root::

    .venv/bin/python benchmarks/snapshot_check.py --size 1G --value-size 1024
    .venv/bin/python benchmarks/snapshot_check.py --size 1G --value-size 102400 --runs 3

It uses tests/formats/realetcd.py to start etcd; everything lives under ``--dir`` (a fresh
temporary directory by default, removed afterwards unless ``--keep``). Only the etcd it
started is signalled, by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from etcd_recovery.live import EtcdClient  # noqa: E402
from tests.formats.realetcd import build_dir, running_etcd  # noqa: E402

TXN_BYTES = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
    t = text.strip().upper().removesuffix("B")
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            return int(float(t[: -len(u)]) * units[u])
    return int(t)


def fill(endpoint: str, total: int, value_size: int) -> int:
    """Write ``total`` bytes of values; returns the number of keys."""
    per_txn = max(1, min(100, TXN_BYTES // value_size))
    n = total // value_size
    value = os.urandom(value_size)  # incompressible, the same for every key
    with EtcdClient(endpoint, timeout=60.0) as c:
        for start in range(0, n, per_txn):
            items = [(f"/bench/{i:010d}".encode(), value)
                     for i in range(start, min(n, start + per_txn))]
            c.put_many(items, batch=per_txn)
    return n


def run_measured(argv: list[str], scratch: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stdout of one run of ``argv``.

    The RSS comes from GNU time's ``%M``: a child forked from this Python process would
    report this process's RSS as its own high-water mark (Linux copies it at fork).
    """
    rss_file = scratch / "rss"
    t0 = time.monotonic()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv],
                         capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]}: exit {res.returncode}: {res.stderr[-2000:]}")
    return wall, int(rss_file.read_text().split()[-1]), res.stdout


READER = """
import json, sys
from etcd_recovery.formats.snapshot import read_snapshot, sha256_of, has_checksum
from etcd_recovery.formats.source import FileSource
mode, path = sys.argv[1], sys.argv[2]
src = FileSource(path)
if mode == "sha256":
    n = src.size()
    print(json.dumps({"sha256_ok": sha256_of(src, n - 32) == src.read(n - 32, 32)}))
else:
    s = read_snapshot(src, check_hash=(mode == "full"))
    print(json.dumps({**s.etcdutl_json((3, 6)), "hash_ok": s.hash_ok,
                      "total_entries": s.total_entries}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", default="3.6-newest")
    ap.add_argument("--size", type=parse_size, default=parse_size("1G"))
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="snapshot-check-"))
    base.mkdir(parents=True, exist_ok=True)
    snap = base / "snapshot.db"
    result: dict[str, Any] = {"role": args.role, "value_size": args.value_size}
    try:
        quota = str(max(4 << 30, 3 * args.size))
        extra = (f"--quota-backend-bytes={quota}", "--snapshot-count=100000")
        with running_etcd(args.role, base / "data", extra_args=extra) as e:
            t0 = time.monotonic()
            result["keys"] = fill(f"127.0.0.1:{e.client_port}", args.size, args.value_size)
            result["fill_s"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            e.etcdctl("snapshot", "save", str(snap), timeout=1800)
            result["save_s"] = round(time.monotonic() - t0, 1)
            e.stop()
        result["file_bytes"] = snap.stat().st_size
        py = sys.executable
        env_path = str(REPO)
        etcdutl = str(build_dir(args.role) / "etcdutl")
        cases = {
            "read_snapshot (sha256 + status)": [py, "-c", READER, "full", str(snap)],
            "read_snapshot(check_hash=False)": [py, "-c", READER, "status", str(snap)],
            "sha256_of only": [py, "-c", READER, "sha256", str(snap)],
            "etcdutl snapshot status": [etcdutl, "snapshot", "status", str(snap), "-w", "json"],
            "sha256sum": ["sha256sum", str(snap)],
        }
        os.environ["PYTHONPATH"] = env_path
        timings: dict[str, list[tuple[float, int]]] = {k: [] for k in cases}
        outputs: dict[str, str] = {}
        for _ in range(args.runs):
            for name, argv in cases.items():
                wall, rss, out = run_measured(argv, base)
                timings[name].append((wall, rss))
                outputs[name] = out
        ours = json.loads(outputs["read_snapshot (sha256 + status)"])
        theirs = json.loads(outputs["etcdutl snapshot status"])
        result["agree"] = all(ours[k] == theirs[k] for k in theirs)
        result["status"] = theirs
        result["hash_ok"] = ours["hash_ok"]
        result["timings"] = {k: {"wall_s": [round(w, 2) for w, _ in v],
                                 "peak_rss_mib": max(r for _, r in v) // 1024}
                             for k, v in timings.items()}
        print(json.dumps(result, indent=2))
        print(f"\n{result['keys']} keys of {args.value_size} B, file "
              f"{result['file_bytes'] / 2**20:.0f} MiB; figures agree: {result['agree']}")
        print(f"{'':34} {'best s':>8} {'median s':>9} {'peak RSS MiB':>13}")
        for k, v in timings.items():
            walls = sorted(w for w, _ in v)
            print(f"{k:34} {walls[0]:8.2f} {walls[len(walls) // 2]:9.2f} "
                  f"{max(r for _, r in v) // 1024:13d}")
        return 0 if result["agree"] and result["hash_ok"] else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
