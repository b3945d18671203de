"""The lab's base image: Debian bookworm with systemd, sshd and python3, built offline.

Built with debootstrap from the machine's own apt mirror (read from its apt configuration at
run time), imported into Docker, and cached twice: as a Docker image tagged with a digest of the
recipe, and as a rootfs tarball under the cache directory, so that a later run (or a Docker
engine whose images were wiped) skips the build.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import LabError

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps",
            "python3-minimal", "python3-yaml", "sudo")
# Commands run in the new root before it is packed (bump RECIPE_REV when they change).
RECIPE_REV = 1
CUSTOMIZE = [
    # Every host gets its own host key at creation; none is baked into the image.
    "rm -f /etc/ssh/ssh_host_*",
    ": > /etc/machine-id",
    # A non-root operator account with passwordless sudo, to exercise `sudo -n` reads.
    "useradd --create-home --shell /bin/bash ops",
    "echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops && chmod 0440 /etc/sudoers.d/ops",
    # Units that have no business in a container.
    "systemctl mask systemd-resolved.service getty@tty1.service console-getty.service "
    "systemd-logind.service systemd-networkd-wait-online.service || true",
    "systemctl enable ssh.service",
    "apt-get clean && rm -rf /var/lib/apt/lists/*",
]
IMAGE_REPO = "etcd-recovery-lab"
CACHE_DIR = Path(os.environ.get("ETCD_RECOVERY_CACHE", "/var/cache/etcd-recovery"))


def recipe_digest() -> str:
    text = repr((SUITE, PACKAGES, CUSTOMIZE, RECIPE_REV))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_tag() -> str:
    return f"{IMAGE_REPO}:{recipe_digest()}"


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        text = Path(path).read_text()
        for block in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", block, re.M) and "security" not in block:
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m:
                    return m.group(1)
    if os.path.exists("/etc/apt/sources.list"):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in line:
                return next(p for p in parts[1:] if "://" in p)
    raise LabError("no Debian mirror found in this machine's apt configuration")


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LabError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def build_rootfs_tar(dest: Path, log: Any = None) -> None:
    """debootstrap a root file system and pack it as a tarball at ``dest``."""
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed; run scripts/setup")
    work = Path(tempfile.mkdtemp(prefix="erl-rootfs-"))
    try:
        root = work / "root"
        if log:
            log(f"building the lab image with debootstrap ({SUITE}); this takes about a minute")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(root), apt_mirror()], "debootstrap")
        for cmd in CUSTOMIZE:
            _run(["chroot", str(root), "/bin/sh", "-c", cmd], f"image step {cmd!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], "tar")
        tmp.replace(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_image(client: Any, log: Any = None) -> str:
    """Return the tag of the lab image, building or importing it if needed."""
    import docker.errors

    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    tarball = CACHE_DIR / f"rootfs-{recipe_digest()}.tar"
    if not tarball.exists():
        build_rootfs_tar(tarball, log)
    if log:
        log(f"importing {tarball} as {tag}")
    repo, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(
            str(tarball), repository=repo, tag=version,
            changes=['CMD ["/lib/systemd/systemd"]', "ENV container=docker"])
        client.images.get(tag)
    except docker.errors.DockerException as exc:
        raise LabError(f"importing {tarball} as {tag} failed: {exc}") from exc
    return tag
