"""What each lab host is given: etcd's flags and configuration files as kubeadm (static pod)
and kubespray or a hand-made unit (systemd) write them, the host's certificates and SSH keys,
packed as the tar archive the host is created with. Pure: state in, text and bytes out; the
unit tests read these generators as realistic configurations."""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import time
from pathlib import Path

from . import pki
from .installed import in_host, vkey
from .state import LabHost, LabState

FILES = Path(__file__).parent / "files"


# ---------------------------------------------------------------------------- files per host

# Directories a lab's WAL disk may not be mounted on: they hold the system, the data dir or
# the recovery's state.
DATA_DIR = "/var/lib/etcd"   # every lab member's data dir (both runtimes)
_NOT_A_WAL_DISK = ("/var/lib/etcd", "/var/lib/etcd-recovery", "/etc", "/usr", "/opt", "/root",
                   "/home", "/run", "/tmp", "/bin", "/sbin", "/lib", "/boot", "/dev", "/proc",
                   "/sys", "/var/lib/docker", "/var/log")


def wal_mount(wal_dir: str) -> str:
    """Where a lab host's WAL disk is mounted for ``--wal-dir`` ``wal_dir``: its parent
    directory (empty: no WAL dir of its own). etcd makes a WAL as ``<wal-dir>.tmp`` and renames
    it onto ``<wal-dir>`` (etcd v3.6.16 server/storage/wal/wal.go: Create, renameWAL), which
    cannot cross a mount point: so the WAL dir is a directory on the disk, not the disk's mount
    point, as on a real host with a WAL disk."""
    return posixpath.dirname(wal_dir) if wal_dir else ""


def wal_dir_problem(wal_dir: str) -> str | None:
    """Why ``lab up --wal-dir`` cannot take ``wal_dir``, or None."""
    if not wal_dir:
        return None
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", wal_dir) or ".." in wal_dir.split("/") \
            or posixpath.normpath(wal_dir) != wal_dir:
        return f"--wal-dir {wal_dir!r}: give a normalized absolute path of letters, digits, . _ -"
    disk = wal_mount(wal_dir)
    if disk.count("/") < 2:
        return (f"--wal-dir {wal_dir}: its parent {disk} is where the lab mounts the WAL's own "
                "disk (etcd renames <wal-dir>.tmp onto the WAL dir, so the WAL dir cannot be "
                "the mount point itself): give a directory two levels below a directory of "
                "its own, e.g. /var/lib/etcd-wal/wal")
    for sys_dir in _NOT_A_WAL_DISK:
        if disk == sys_dir or disk.startswith(sys_dir + "/") or sys_dir.startswith(disk + "/"):
            return (f"--wal-dir {wal_dir}: the lab would mount the WAL's disk on {disk}, which "
                    f"is or holds {sys_dir}; give e.g. /var/lib/etcd-wal/wal")
    return None

OPS_UID = 1000  # the image's `ops` account (first user made by useradd)


def _tar(files: dict[str, tuple[bytes, int]], links: dict[str, str],
         dirs: dict[str, int]) -> bytes:
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.name.startswith("home/ops"):
            info.uid = info.gid = OPS_UID
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, mode in dirs.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(owned(info))
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(owned(info), io.BytesIO(data))
        for path, target in links.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def initial_cluster(hosts: list[LabHost]) -> str:
    return ",".join(f"{h.name}={h.peer_url}" for h in hosts)


def etcd_flags(h: LabHost, hosts: list[LabHost], pki_dir: str, token: str,
               version: str = "", wal_dir: str = "") -> dict[str, str]:
    """etcd's settings for one member, as kubeadm writes them for its etcd ``version`` (flag
    name -> value); ``wal_dir``: a WAL dir of its own (``--wal-dir``), none when empty."""
    return {
        "advertise-client-urls": h.client_url,
        "cert-file": f"{pki_dir}/server.crt",
        "client-cert-auth": "true",
        "data-dir": "/var/lib/etcd",
        **({"wal-dir": wal_dir} if wal_dir else {}),
        "initial-advertise-peer-urls": h.peer_url,
        "initial-cluster": initial_cluster(hosts),
        "initial-cluster-state": "new",
        "initial-cluster-token": token,
        "key-file": f"{pki_dir}/server.key",
        "listen-client-urls": f"https://127.0.0.1:2379,{h.client_url}",
        "listen-metrics-urls": "http://127.0.0.1:2381",
        "listen-peer-urls": h.peer_url,
        "name": h.name,
        "peer-cert-file": f"{pki_dir}/peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": f"{pki_dir}/peer.key",
        "peer-trusted-ca-file": f"{pki_dir}/ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": f"{pki_dir}/ca.crt",
        **kubeadm_version_flags(version),
    }


def _at_least(version: str, minor: tuple[int, int]) -> bool:
    return vkey(version)[:2] >= minor


def kubeadm_version_flags(version: str) -> dict[str, str]:
    """The flags kubeadm 1.34-1.36 adds for etcd >= 3.6, in place of the --experimental-* pair
    that etcd 3.7 removed (kubernetes/kubernetes cmd/kubeadm/app/phases/etcd/local.go,
    getEtcdCommand; tests/fixtures/kubeadm/v1.3X.yaml). Older labs keep the flags they had."""
    if not version or not _at_least(version, (3, 6)):
        return {}
    return {"feature-gates": "InitialCorruptCheck=true", "watch-progress-notify-interval": "5s"}


def kubespray_layout(state: LabState) -> bool:
    """A systemd lab on etcd >= 3.6 is laid out as kubespray writes it (roles/etcd/templates/
    etcd.env.j2 and etcd-host.service.j2 at kubespray's main of 2026-08: /etc/etcd.env,
    certificates in /etc/ssl/etcd/ssl); older systemd labs keep a hand-made etcd.service with
    /etc/etcd/etcd.env."""
    return state.runtime == "systemd" and _at_least(state.etcd_version, (3, 6))


def env_file_of(state: LabState) -> str | None:
    if state.runtime != "systemd":
        return None
    return "/etc/etcd.env" if kubespray_layout(state) else "/etc/etcd/etcd.env"


KUBESPRAY_CERTS = "/etc/ssl/etcd/ssl"


def kubespray_env(h: LabHost, hosts: list[LabHost], version: str, wal_dir: str = "") -> str:
    """/etc/etcd.env as kubespray's etcd.env.j2 renders it with its defaults (roles/etcd_defaults/
    defaults/main.yml: metrics basic, quota 2 GiB, compaction retention 8, 5 snapshots and WALs;
    roles/kubespray_defaults: heartbeat 250 ms, election 5000 ms, snapshot count 100000). For
    3.6 kubespray still writes the --experimental-* names, which 3.6 accepts as deprecated; 3.7
    removed them (etcd-io/etcd#19959), so a 3.7 host gets their new names. ``wal_dir``: the
    lab's ``--wal-dir`` (ETCD_WAL_DIR after ETCD_DATA_DIR), none when empty."""
    crt = KUBESPRAY_CERTS
    experimental = not _at_least(version, (3, 7))
    lines = [
        f"# Environment file for etcd v{version}",
        "ETCD_DATA_DIR=/var/lib/etcd",
        *([f"ETCD_WAL_DIR={wal_dir}"] if wal_dir else []),
        f"ETCD_ADVERTISE_CLIENT_URLS={h.client_url}",
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={h.peer_url}",
        "ETCD_INITIAL_CLUSTER_STATE=new",
        "",
        "ETCD_METRICS=basic",
        f"ETCD_LISTEN_CLIENT_URLS={h.client_url},https://127.0.0.1:2379",
        "ETCD_ELECTION_TIMEOUT=5000",
        "ETCD_HEARTBEAT_INTERVAL=250",
        "ETCD_INITIAL_CLUSTER_TOKEN=k8s_etcd",
        f"ETCD_LISTEN_PEER_URLS={h.peer_url}",
        f"ETCD_NAME={h.name}",
        "ETCD_PROXY=off",
        f"ETCD_INITIAL_CLUSTER={initial_cluster(hosts)}",
        "ETCD_AUTO_COMPACTION_RETENTION=8",
        "ETCD_SNAPSHOT_COUNT=100000",
        "ETCD_QUOTA_BACKEND_BYTES=2147483648",
        "ETCD_MAX_REQUEST_BYTES=1572864",
        "ETCD_LOG_LEVEL=info",
        "ETCD_MAX_SNAPSHOTS=5",
        "ETCD_MAX_WALS=5",
        "",
        "# TLS settings",
        f"ETCD_TRUSTED_CA_FILE={crt}/ca.pem",
        f"ETCD_CERT_FILE={crt}/member-{h.name}.pem",
        f"ETCD_KEY_FILE={crt}/member-{h.name}-key.pem",
        "ETCD_CLIENT_CERT_AUTH=true",
        "",
        f"ETCD_PEER_TRUSTED_CA_FILE={crt}/ca.pem",
        f"ETCD_PEER_CERT_FILE={crt}/member-{h.name}.pem",
        f"ETCD_PEER_KEY_FILE={crt}/member-{h.name}-key.pem",
        "ETCD_PEER_CLIENT_CERT_AUTH=true",
        "",
        "# CLI settings",
        "ETCDCTL_ENDPOINTS=https://127.0.0.1:2379",
        f"ETCDCTL_CACERT={crt}/ca.pem",
        f"ETCDCTL_KEY={crt}/admin-{h.name}-key.pem",
        f"ETCDCTL_CERT={crt}/admin-{h.name}.pem",
        "",
        *(["ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true", "",
           "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL=5s"] if experimental else
          ["ETCD_FEATURE_GATES=InitialCorruptCheck=true", "",
           "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL=5s"]),
    ]
    return "\n".join(lines) + "\n"


def static_pod_manifest(flags: dict[str, str], version: str) -> str:
    wal_disk = wal_mount(flags.get("wal-dir", ""))
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  annotations:",
        f"    kubeadm.kubernetes.io/etcd.advertise-client-urls: {flags['advertise-client-urls']}",
        "  labels:",
        "    component: etcd",
        "    tier: control-plane",
        "  name: etcd",
        "  namespace: kube-system",
        "spec:",
        "  containers:",
        "  - command:",
        "    - etcd",
        *[f"    - --{k}={v}" for k, v in flags.items()],
        f"    image: registry.k8s.io/etcd:{version}-0",
        "    imagePullPolicy: IfNotPresent",
        "    name: etcd",
        "    volumeMounts:",
        "    - mountPath: /var/lib/etcd",
        "      name: etcd-data",
        "    - mountPath: /etc/kubernetes/pki/etcd",
        "      name: etcd-certs",
        *([f"    - mountPath: {wal_disk}", "      name: etcd-wal"] if wal_disk else []),
        "  hostNetwork: true",
        "  priorityClassName: system-node-critical",
        "  volumes:",
        "  - hostPath:",
        "      path: /etc/kubernetes/pki/etcd",
        "      type: DirectoryOrCreate",
        "    name: etcd-certs",
        "  - hostPath:",
        "      path: /var/lib/etcd",
        "      type: DirectoryOrCreate",
        "    name: etcd-data",
        *(["  - hostPath:", f"      path: {wal_disk}", "      type: DirectoryOrCreate",
           "    name: etcd-wal"] if wal_disk else []),
        "status: {}",
    ]
    return "\n".join(lines) + "\n"


def systemd_env(flags: dict[str, str]) -> str:
    lines = ["# etcd settings, read by etcd.service (EnvironmentFile=)"]
    for k, v in flags.items():
        lines.append(f"ETCD_{k.upper().replace('-', '_')}={v}")
    return "\n".join(lines) + "\n"


def host_files(state: LabState, h: LabHost, ca: pki.KeyPair, host_key: pki.SshKey,
               user_key: pki.SshKey) -> bytes:
    ips = [h.mgmt_ip, h.peer_ip, "127.0.0.1"]
    server = pki.issue(ca, h.name, dns=[h.name, "localhost"], ips=ips, server=True, client=True)
    peer = pki.issue(ca, h.name, dns=[h.name, "localhost"], ips=ips, server=True, client=True)
    # kubeadm also leaves a client certificate for health checks on every control-plane host
    health = pki.issue(ca, "kube-etcd-healthcheck-client", dns=[], ips=[], server=False,
                       client=True)
    pki_dir = "/etc/kubernetes/pki/etcd" if state.runtime == "static-pod" else "/etc/etcd/pki"
    flags = etcd_flags(h, state.hosts, pki_dir, f"{state.id}-token", state.version_of(h),
                       state.wal_dir)
    own_pki = not kubespray_layout(state)  # kubespray's certificates are written below
    files: dict[str, tuple[bytes, int]] = {
        **({f"{pki_dir}/ca.crt": (ca.cert_pem, 0o644),
            f"{pki_dir}/server.crt": (server.cert_pem, 0o644),
            f"{pki_dir}/server.key": (server.key_pem, 0o600),
            f"{pki_dir}/peer.crt": (peer.cert_pem, 0o644),
            f"{pki_dir}/peer.key": (peer.key_pem, 0o600)} if own_pki else {}),
        **({f"{pki_dir}/healthcheck-client.crt": (health.cert_pem, 0o644),
            f"{pki_dir}/healthcheck-client.key": (health.key_pem, 0o600)}
           if state.runtime == "static-pod" else {}),
        "/etc/ssh/ssh_host_ed25519_key": (host_key.private_openssh, 0o600),
        "/etc/ssh/ssh_host_ed25519_key.pub": (host_key.public_line.encode() + b"\n", 0o644),
        "/etc/ssh/sshd_config.d/lab.conf": (
            b"HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
            b"PermitRootLogin prohibit-password\n", 0o644),
        "/root/.ssh/authorized_keys": (user_key.public_line.encode() + b"\n", 0o600),
        "/home/ops/.ssh/authorized_keys": (user_key.public_line.encode() + b"\n", 0o600),
    }
    dirs = {"/var/lib/etcd": 0o700, "/root/.ssh": 0o700, "/home/ops/.ssh": 0o700}
    links: dict[str, str] = {}
    if state.runtime == "static-pod":
        files["/etc/kubernetes/manifests/etcd.yaml"] = (
            static_pod_manifest(flags, state.version_of(h)).encode(), 0o600)
        files["/usr/local/bin/kubelet-lite"] = ((FILES / "kubelet-lite.py").read_bytes(), 0o755)
        # containerd's ctr as far as the snapshot method uses it (etcdutl from the image)
        files["/usr/local/bin/ctr"] = ((FILES / "ctr-lite").read_bytes(), 0o755)
        files["/etc/systemd/system/kubelet-lite.service"] = (
            (FILES / "kubelet-lite.service").read_bytes(), 0o644)
        links["/etc/systemd/system/multi-user.target.wants/kubelet-lite.service"] = \
            "/etc/systemd/system/kubelet-lite.service"
    else:
        if kubespray_layout(state):
            crt = KUBESPRAY_CERTS
            files |= {f"{crt}/ca.pem": (ca.cert_pem, 0o644),
                      f"{crt}/member-{h.name}.pem": (peer.cert_pem, 0o644),
                      f"{crt}/member-{h.name}-key.pem": (peer.key_pem, 0o600),
                      f"{crt}/admin-{h.name}.pem": (health.cert_pem, 0o644),
                      f"{crt}/admin-{h.name}-key.pem": (health.key_pem, 0o600),
                      "/etc/etcd.env": (kubespray_env(h, state.hosts, state.version_of(h),
                                                      state.wal_dir).encode(), 0o640)}
            unit = (FILES / "etcd-kubespray.service").read_bytes()
        else:
            files["/etc/etcd/etcd.env"] = (systemd_env(flags).encode(), 0o640)
            unit = (FILES / "etcd.service").read_bytes()
        files["/etc/systemd/system/etcd.service"] = (unit, 0o644)
        links["/etc/systemd/system/multi-user.target.wants/etcd.service"] = \
            "/etc/systemd/system/etcd.service"
        links["/usr/local/bin/etcd"] = f"{in_host(state.version_of(h))}/etcd"
        links["/usr/local/bin/etcdctl"] = f"{in_host(state.version_of(h))}/etcdctl"
        links["/usr/local/bin/etcdutl"] = f"{in_host(state.version_of(h))}/etcdutl"
    return _tar(files, links, dirs)
