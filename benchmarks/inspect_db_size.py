"""Benchmark: does ``inspect``'s on-disk path cost grow with the size of etcd's database?

For each target size, the script brings up a fresh 3-member lab (no keys), fills it with
~512 KiB values until every member's ``dbSize`` reaches the target, stops etcd on all three
members (SIGKILL, kept down), runs ``etcd-recovery inspect -o json`` several times and
records the total and per-member time, the bytes each member's reads fetched over SFTP, and
the ``db_size_bytes`` inspect found. Then it removes the lab (unless ``--keep``), even when a
step failed.

Run from the repository root::

    .venv/bin/python benchmarks/inspect_db_size.py                 # 10M and 1G
    .venv/bin/python benchmarks/inspect_db_size.py --sizes 10M --runs 5

Sizes take K/M/G (powers of 1000) or Ki/Mi/Gi (powers of 1024). Each lab lives in
``<lab-root>/bench-lab-<size>``; the script refuses to reuse a lab directory that already
holds a lab, and only ever removes the lab it brought up itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from etcd_recovery.errors import EXIT_USAGE, EtcdRecoveryError, LabError
from etcd_recovery.formats.backend import read_backend
from etcd_recovery.formats.wal import read_wal, wal_file_names
from etcd_recovery.inventory import Member, load_inventory
from etcd_recovery.lab.lab import Lab
from etcd_recovery.lab.state import LabState
from etcd_recovery.transport.factory import ssh_transport

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results-inspect.json"
FILL_PREFIX = "/bench/fill/"
PUT_TIMEOUT_S = 30.0
PUT_ATTEMPTS = 3
FILL_STEP = 0.7  # share of the estimated remaining puts written per round

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9,
          "KI": 2**10, "MI": 2**20, "GI": 2**30}


def parse_size(text: str) -> int:
    """``10M`` -> 10_000_000, ``1Gi`` -> 1_073_741_824 (case-insensitive, optional ``B``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10M, 1G, 512Mi)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def parse_sizes(text: str) -> list[tuple[str, int]]:
    out = [(part.strip(), parse_size(part)) for part in text.split(",") if part.strip()]
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- results

@dataclass
class MemberRun:
    name: str
    source: str | None
    bytes_read: int
    elapsed_s: float
    db_size_bytes: int | None
    error: str | None


@dataclass
class InspectRun:
    run: int
    exit_code: int
    elapsed_s: float            # inspect's own figure (all members, concurrently)
    wall_s: float               # the whole CLI process, Python start-up included
    chosen: str | None
    members: list[MemberRun]


@dataclass
class Breakdown:
    """One member's on-disk read split into its parts, with inspect's own readers."""

    name: str
    wal_files: int              # *.wal files in member/wal
    wal_dir_bytes: int          # their total size (what a full copy would fetch)
    wal_files_read: int
    wal_bytes_read: int
    wal_s: float
    db_file_bytes: int          # member/snap/db's size
    db_data_bytes: int          # etcd's dbSize as of the backend's last commit
    db_bytes_read: int
    db_s: float


@dataclass
class EndpointStatus:
    endpoint: str
    db_size: int
    db_size_in_use: int | None
    raft_index: int


@dataclass
class SizeResult:
    label: str
    target_bytes: int
    lab_dir: str
    runtime: str
    etcd_version: str
    value_bytes: int
    writers: int
    up_s: float | None = None
    fill_s: float | None = None
    puts: int = 0
    status: list[EndpointStatus] = field(default_factory=list)
    stop_s: float | None = None
    runs: list[InspectRun] = field(default_factory=list)
    breakdown: list[Breakdown] = field(default_factory=list)
    down_s: float | None = None
    kept: bool = False
    error: str | None = None


# ---------------------------------------------------------------------------------- steps

def clean_etcdctl_env() -> None:
    """etcdctl 3.5 refuses a flag that an ETCDCTL_* variable also sets; the lab passes flags."""
    for name in [n for n in os.environ if n.startswith("ETCDCTL_") and n != "ETCDCTL_API"]:
        del os.environ[name]


def endpoint_status(lab: Lab, state: LabState) -> list[EndpointStatus]:
    res = lab.etcdctl(state, ["endpoint", "status", "-w", "json"], timeout=15)
    if res.returncode != 0:
        raise LabError(f"endpoint status failed: {res.stderr.strip() or res.stdout.strip()}")
    try:
        out = []
        for ep in json.loads(res.stdout):
            st: dict[str, Any] = ep["Status"]
            in_use = st.get("dbSizeInUse")
            out.append(EndpointStatus(endpoint=str(ep["Endpoint"]), db_size=int(st["dbSize"]),
                                      db_size_in_use=int(in_use) if in_use is not None
                                      else None,
                                      raft_index=int(st.get("raftIndex", 0))))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"unexpected `endpoint status -w json` output: {exc}") from exc
    if len(out) != len(state.hosts):
        raise LabError(f"endpoint status answered for {len(out)} of {len(state.hosts)} members")
    return out


def put_one(lab: Lab, state: LabState, key: str, value: str) -> None:
    last = ""
    for attempt in range(PUT_ATTEMPTS):
        res = lab.etcdctl(state, ["put", key], timeout=PUT_TIMEOUT_S, stdin=value)
        if res.returncode == 0 and res.stdout.strip() == "OK":
            return
        last = res.stderr.strip() or res.stdout.strip()
        time.sleep(0.5 * (attempt + 1))
    raise LabError(f"put {key} failed {PUT_ATTEMPTS} times: {last[-300:]}")


def fill(lab: Lab, state: LabState, target: int, value_bytes: int,
         writers: int) -> tuple[int, list[EndpointStatus]]:
    """Put values of ``value_bytes`` until every member's dbSize reaches ``target``."""
    # Hex text: etcdctl reads the value from stdin as is; random, so nothing could shrink it.
    value = os.urandom(value_bytes // 2).hex()
    status = endpoint_status(lab, state)
    puts = 0
    for _ in range(50):
        low = min(s.db_size for s in status)
        if low >= target:
            break
        # bbolt stores a large value on overflow pages, about one value's worth of file each,
        # but free space is fragmented and the file grows faster: close in by rounds.
        batch = max(1, math.ceil(FILL_STEP * (target - low) / value_bytes))
        keys = [f"{FILL_PREFIX}{n:08d}" for n in range(puts, puts + batch)]
        log(f"  writing {batch} x {human(value_bytes)} with {writers} writers "
            f"(lowest dbSize {human(low)}, target {human(target)})")
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=writers) as pool:
            for _done in pool.map(lambda k: put_one(lab, state, k, value), keys):
                pass
        puts += batch
        log(f"  {batch} puts in {time.monotonic() - t0:.1f} s")
        time.sleep(1.0)  # let the backends commit their batch before reading dbSize
        status = endpoint_status(lab, state)
    else:
        raise LabError(f"dbSize did not reach {target} after {puts} puts")
    return puts, status


CLI_OVERRIDE: list[str] = []  # set from --cli


def etcd_recovery_argv() -> list[str]:
    if CLI_OVERRIDE:
        return list(CLI_OVERRIDE)
    exe = Path(sys.executable).parent / "etcd-recovery"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("etcd-recovery")
    if found:
        return [found]
    raise LabError("cannot find the etcd-recovery command next to this Python or on PATH")


def inspect_once(inventory: Path, run: int) -> InspectRun:
    argv = [*etcd_recovery_argv(), "inspect", "-i", str(inventory), "-o", "json"]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    try:
        report: dict[str, Any] = json.loads(res.stdout)
        members = [MemberRun(name=str(m["name"]), source=m.get("source"),
                             bytes_read=int(m.get("bytes_read") or 0),
                             elapsed_s=float(m.get("elapsed_s") or 0.0),
                             db_size_bytes=m.get("db_size_bytes"), error=m.get("error"))
                   for m in report["members"]]
        return InspectRun(run=run, exit_code=res.returncode,
                          elapsed_s=float(report["elapsed_s"]), wall_s=round(wall, 3),
                          chosen=report.get("chosen"), members=members)
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"inspect exited {res.returncode} without a JSON report: "
                       f"{res.stderr.strip()[-500:] or res.stdout.strip()[-500:]}") from exc


def lab_dir_for(root: str, label: str) -> Path:
    return Path(root) / f"bench-lab-{re.sub(r'[^A-Za-z0-9]+', '', label)}"


def breakdown_one(member: Member) -> Breakdown:
    """WAL and backend reads of one stopped member, timed and counted separately."""
    t = ssh_transport(member)
    try:
        sudo = member.ssh.sudo
        wal_dir = posixpath.join(member.data_dir, "member", "wal")
        listing = {f.name: f.size for f in t.list_dir(wal_dir, sudo=sudo)}
        names = wal_file_names(listing)
        t0 = time.monotonic()
        wal_read = files_read = 0
        for count in (1, 2):  # as inspect does: the one before too when the last is empty
            sources = [t.open_file(posixpath.join(wal_dir, n), sudo=sudo)
                       for n in names[-count:]]
            wal = read_wal(sources)
            wal_read += sum(int(getattr(src, "bytes_read", 0)) for src in sources)
            files_read = count
            if wal.entry_count > 0 or len(names) <= count:
                break
        wal_s = time.monotonic() - t0
        t0 = time.monotonic()
        src = t.open_file(posixpath.join(member.data_dir, "member", "snap", "db"), sudo=sudo)
        db = read_backend(src)
        db_s = time.monotonic() - t0
        return Breakdown(name=member.name, wal_files=len(names),
                         wal_dir_bytes=sum(listing[n] for n in names),
                         wal_files_read=files_read, wal_bytes_read=wal_read,
                         wal_s=round(wal_s, 3), db_file_bytes=db.db_size_bytes,
                         db_data_bytes=db.data_size_bytes,
                         db_bytes_read=int(getattr(src, "bytes_read", 0)),
                         db_s=round(db_s, 3))
    finally:
        t.close()


def bench_size(result: SizeResult, args: argparse.Namespace,
               save: Callable[[], None]) -> None:
    """Fill in ``result`` step by step (``save`` writes what is known so far)."""
    label, target, lab_dir = result.label, result.target_bytes, Path(result.lab_dir)
    lab = Lab(lab_dir, log=lambda m: log(f"  [lab] {m}"))
    if lab.exists():
        result.error = (f"{lab_dir} already holds a lab; remove it with `etcd-recovery lab down "
                        f"--dir {lab_dir}` (or pass another --lab-root)")
        log(result.error)
        return
    try:
        log(f"{label}: lab up in {lab_dir}")
        t0 = time.monotonic()
        state = lab.up(members=3, runtime=args.runtime, version=args.etcd_version, keys=0)
        result.up_s = round(time.monotonic() - t0, 2)
        log(f"{label}: lab up took {result.up_s:.1f} s; filling to {human(target)}")
        t0 = time.monotonic()
        result.puts, result.status = fill(lab, state, target, args.value_bytes, args.writers)
        result.fill_s = round(time.monotonic() - t0, 2)
        log(f"{label}: filled with {result.puts} puts in {result.fill_s:.1f} s; dbSize "
            + ", ".join(f"{s.endpoint}={human(s.db_size)}" for s in result.status))
        save()
        t0 = time.monotonic()
        for h in state.hosts:
            lab.stop_etcd(h.name)
        result.stop_s = round(time.monotonic() - t0, 2)
        log(f"{label}: etcd stopped on {len(state.hosts)} members in {result.stop_s:.1f} s")
        for run in range(1, args.runs + 1):
            r = inspect_once(lab.inventory_path, run)
            result.runs.append(r)
            save()
            log(f"{label}: inspect run {run}: {r.elapsed_s:.3f} s (wall {r.wall_s:.2f} s), "
                f"exit {r.exit_code}, read "
                + ", ".join(f"{m.name}={human(m.bytes_read)}" for m in r.members))
            bad = [f"{m.name}: {m.error}" for m in r.members if m.source != "disk" or m.error]
            if bad:
                log(f"{label}: WARNING, not every member was read from disk: {'; '.join(bad)}")
        inv = load_inventory(lab.inventory_path)
        result.breakdown = [breakdown_one(m) for m in inv.members]
        save()
    except (EtcdRecoveryError, subprocess.SubprocessError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"{label}: FAILED: {result.error}")
    finally:
        if args.keep:
            result.kept = True
            log(f"{label}: keeping the lab; remove it with "
                f"`etcd-recovery lab down --dir {lab_dir}`")
        else:
            t0 = time.monotonic()
            try:
                removed = lab.down()
                result.down_s = round(time.monotonic() - t0, 2)
                log(f"{label}: lab down took {result.down_s:.1f} s ({len(removed)} objects)")
            except Exception as exc:  # report, never mask the original outcome
                result.error = (result.error or "") + f"; lab down failed: {exc}"
                log(f"{label}: lab down FAILED: {exc}; run `etcd-recovery lab down "
                    f"--dir {lab_dir}`")
        save()


# ---------------------------------------------------------------------------------- output

def print_tables(results: list[SizeResult]) -> None:
    print()
    print(f"{'size':>6} {'dbSize (etcd)':>14} {'puts':>5} {'up s':>6} {'fill s':>7} "
          f"{'stop s':>6} {'down s':>6}  error")
    for r in results:
        low = min((s.db_size for s in r.status), default=None)

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        error = (r.error or "").strip().splitlines()
        print(f"{r.label:>6} {human(low):>14} {r.puts:>5} {f(r.up_s):>6} {f(r.fill_s):>7} "
              f"{f(r.stop_s):>6} {f(r.down_s):>6}  {error[-1][:100] if error else ''}")
    print()
    print(f"{'size':>6} {'run':>3} {'total s':>8} {'wall s':>7}  "
          "per member: bytes_read / elapsed_s / db_size_bytes")
    for r in results:
        for run in r.runs:
            cells = "  ".join(f"{m.name} {human(m.bytes_read)} / {m.elapsed_s:.3f} s / "
                              f"{human(m.db_size_bytes)}" for m in run.members)
            print(f"{r.label:>6} {run.run:>3} {run.elapsed_s:>8.3f} {run.wall_s:>7.2f}  {cells}")
    print()
    print(f"{'size':>6} {'member':>7} {'WAL files':>9} {'WAL dir':>10} {'WAL read':>10} "
          f"{'WAL s':>6} {'db file':>10} {'db read':>10} {'db s':>6}")
    for r in results:
        for b in r.breakdown:
            print(f"{r.label:>6} {b.name:>7} {b.wal_files:>9} {human(b.wal_dir_bytes):>10} "
                  f"{human(b.wal_bytes_read):>10} {b.wal_s:>6.3f} {human(b.db_file_bytes):>10} "
                  f"{human(b.db_bytes_read):>10} {b.db_s:>6.3f}")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10M,1G"),
                   help="comma-separated target DB sizes (default 10M,1G)")
    p.add_argument("--runtime", choices=("static-pod", "systemd"), default="static-pod")
    p.add_argument("--etcd-version", default="3.5", help="an installed build or a minor")
    p.add_argument("--keep", action="store_true", help="leave each lab up afterwards")
    p.add_argument("--runs", type=int, default=3, help="inspect runs per size (default 3)")
    p.add_argument("--value-size", dest="value_bytes", type=parse_size, default=512 * 1024,
                   help="size of each value put (default 512Ki; etcd's request limit is 1.5MiB)")
    p.add_argument("--writers", type=int, default=8, help="parallel etcdctl writers (8)")
    p.add_argument("--lab-root", default="/tmp", help="labs go in <lab-root>/bench-lab-<size>")
    p.add_argument("--cli", default="",
                   help="command that runs etcd-recovery (default: the one next to this Python)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results ({DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.runs < 1 or args.writers < 1:
        p.error("--runs and --writers must be at least 1")
    if not 1024 <= args.value_bytes <= 1024 * 1024:
        p.error("--value-size must be between 1Ki and 1Mi")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that removes the lab

    signal.signal(signal.SIGTERM, on_term)
    CLI_OVERRIDE[:] = shlex.split(args.cli)
    # Fail before any lab comes up (filling 1G takes a minute) when `inspect` cannot start:
    # it imports what it needs, then refuses a missing inventory with the usage exit code.
    check = subprocess.run([*etcd_recovery_argv(), "inspect", "-i", "/nonexistent/inv.yaml",
                            "-o", "json"], capture_output=True, text=True, timeout=60)
    if check.returncode != EXIT_USAGE:
        print(f"etcd-recovery does not start:\n{check.stderr.strip()[-1500:]}", file=sys.stderr)
        return 2
    clean_etcdctl_env()
    out: Path = args.out.resolve()
    doc: dict[str, Any] = {
        "benchmark": "inspect on-disk path vs DB size",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "config": {"sizes": [label for label, _ in args.sizes], "runtime": args.runtime,
                   "etcd_version": args.etcd_version, "runs": args.runs,
                   "value_bytes": args.value_bytes, "writers": args.writers,
                   "cli": etcd_recovery_argv()},
        "results": [],
    }
    results: list[SizeResult] = []

    def save() -> None:
        doc["results"] = [asdict(r) for r in results]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out)

    for label, target in args.sizes:
        result = SizeResult(label=label, target_bytes=target,
                            lab_dir=str(lab_dir_for(args.lab_root, label)),
                            runtime=args.runtime, etcd_version=args.etcd_version,
                            value_bytes=args.value_bytes, writers=args.writers)
        results.append(result)
        bench_size(result, args, save)
    doc["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    print_tables(results)
    print(f"results written to {out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
