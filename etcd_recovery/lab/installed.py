"""The etcd builds installed on this machine (scripts/setup puts each in
``/opt/etcd-<version>``, or under $ETCD_RECOVERY_ETCD_DIR), and which one each lab host runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..errors import UsageError

ETCD_ROOT = Path(os.environ.get("ETCD_RECOVERY_ETCD_DIR", "/opt"))


def installed_etcd() -> dict[str, Path]:
    """Every etcd build scripts/setup unpacked: version -> ETCD_ROOT/etcd-<version>."""
    found: dict[str, Path] = {}
    for p in ETCD_ROOT.glob("etcd-*"):
        version = p.name.removeprefix("etcd-")
        if (p / "etcd").is_file() and re.fullmatch(r"\d+\.\d+\.\d+", version):
            found[version] = p
    return found


def vkey(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def etcd_dir(version: str) -> Path:
    """An installed etcd: an exact version ("3.5.30"), or a minor ("3.5": its newest build)."""
    installed = installed_etcd()
    have = ", ".join(sorted(installed, key=vkey)) or "none"
    if re.fullmatch(r"\d+\.\d+\.\d+", version):
        if version in installed:
            return installed[version]
    elif re.fullmatch(r"\d+\.\d+", version):
        match = [v for v in installed if v.startswith(version + ".")]
        if match:
            return installed[max(match, key=vkey)]
    else:
        raise UsageError(f"--etcd-version {version!r}: give a version such as 3.5 or 3.5.30 "
                       f"(installed: {have})")
    raise UsageError(f"no etcd {version} binaries under {ETCD_ROOT} (installed: {have}); run "
                   "scripts/setup, or pass --etcd-binary DIR for another build")


def binary_version(bindir: Path) -> str:
    """The version a directory's ``etcd --version`` prints ("etcd Version: 3.6.5")."""
    etcd = bindir / "etcd"
    if not etcd.is_file() or not os.access(etcd, os.X_OK):
        raise UsageError(f"--etcd-binary {bindir}: no executable etcd in it")
    if not (bindir / "etcdctl").is_file():
        raise UsageError(f"--etcd-binary {bindir}: no etcdctl beside etcd")
    try:
        res = subprocess.run([str(etcd), "--version"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--etcd-binary {bindir}: `etcd --version` failed: {exc}") from exc
    m = re.search(r"etcd Version:\s*v?(\d+\.\d+\.\d+)", res.stdout)
    if res.returncode != 0 or m is None:
        raise UsageError(f"--etcd-binary {bindir}: `etcd --version` printed no version "
                       f"({(res.stdout + res.stderr).strip()[-200:]!r})")
    return m.group(1)


def host_builds(spec: str, members: int, binary: str | None = None) -> list[tuple[str, Path]]:
    """Each host's etcd (version, build directory), in host order. ``spec`` is one version, or
    a comma list with one per host (the last one repeats); ``binary``, a directory holding
    any etcd build, overrides it for every host."""
    if binary is not None:
        bindir = Path(binary).resolve()
        return [(binary_version(bindir), bindir)] * members
    parts = [p.strip() for p in spec.split(",")]
    if any(not p for p in parts) or len(parts) > members:
        raise UsageError(f"--etcd-version {spec!r}: one version, or at most one per host "
                       f"({members}), separated by commas")
    builds = [(d.name.removeprefix("etcd-"), d) for d in map(etcd_dir, parts)]
    return [builds[min(i, len(builds) - 1)] for i in range(members)]


def in_host(version: str) -> str:
    """Where a host sees an etcd build (kubelet-lite maps an image tag to this path)."""
    return f"/opt/etcd-{version}"
