"""Lab orchestration: bring up, inspect, break and remove a lab of etcd hosts in Docker.

Each lab lives in a directory (``--dir``, default ``.lab``) that holds what a user of a real
cluster would have: ``inventory.yaml``, ``known_hosts``, an SSH key pair and client
certificates, plus ``lab.json`` (the lab's own bookkeeping). Every Docker object a lab makes
carries the label ``etcd-recovery.lab=<lab id>``; ``down`` removes exactly those.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import LabError, RefusedError
from ..inventory import EtcdAuth, Inventory, Member, SshTarget, TlsFiles, dump_inventory
from ..retry import Backoff, retry
from . import image, pki
from .configs import DATA_DIR, env_file_of, host_files, wal_dir_problem, wal_mount
from .installed import ETCD_ROOT, binary_version, host_builds, in_host, installed_etcd
from .state import AUTH_FILE, LAB_FILES, LabHost, LabState, lab_id

FILES = Path(__file__).parent / "files"
LABEL = "etcd-recovery.lab"
RUNTIMES = ("static-pod", "systemd")
KEY_PREFIX = "/lab/keys/"
MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
HOLD_DIR = "/run/kubelet-lite/hold"          # kubelet-lite: a pod held down (lab faults)
POD_STATUS = "/run/kubelet-lite/status/etcd.json"
UNIT_DROPIN_DIR = "/run/systemd/system/etcd.service.d"
UNIT_DROPIN = f"{UNIT_DROPIN_DIR}/zz-lab-stop-etcd.conf"
SSH_UP_S = 60.0       # a host's sshd up after its container starts (systemd boots first)
SSH_BANNER_S = 5.0    # one connection's wait for sshd's banner
WAIT_BACKOFF = Backoff(first=0.05, factor=2.0, cap=0.5)      # sshd up, etcd up or down, a host gone
HEALTHY_BACKOFF = Backoff(first=0.1, factor=1.5, cap=1.0)   # every member's endpoint health
# Root's inotify instances a host's systemd holds while it boots (measured on the lab's image:
# 6 per host at boot, 5 once up). A systemd that cannot get one exits at once, status 255,
# and says nothing; the instances are counted per user, so every lab's hosts share
# fs.inotify.max_user_instances (128 by default).
INOTIFY_PER_HOST = 6
INOTIFY_SYSCTL = "/proc/sys/fs/inotify/max_user_instances"

Log = Callable[[str], None]


class _Silent(Exception):
    """wait_ssh's own: some sshd sent no banner in time."""


def _nolog(_: str) -> None:
    return None


def docker_client() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise LabError("the lab needs the Docker SDK, an optional extra: pip install "
                       "'etcd-recovery[lab]' (scripts/setup installs it)") from exc
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
        return client
    except Exception as exc:  # docker raises many types; one message for all
        raise LabError("cannot reach the Docker engine (is it running? scripts/dockerd-up "
                       f"starts one): {exc}") from exc


def free_inotify_instances(up_to: int, init: Callable[[int], int] | None = None,
                           close: Callable[[int], None] = os.close) -> int | None:
    """How many inotify instances this user can still make, counted up to ``up_to`` by
    making them (``init``: libc's inotify_init1) and closing them again; None where that
    cannot be asked (no libc with inotify_init1)."""
    if init is None:
        import ctypes
        try:
            init = ctypes.CDLL(None, use_errno=True).inotify_init1
        except (OSError, AttributeError):
            return None
    fds: list[int] = []
    try:
        while len(fds) < up_to:
            fd = init(os.O_CLOEXEC)
            if fd < 0:
                break
            fds.append(fd)
    finally:
        for fd in fds:
            close(fd)
    return len(fds)


def inotify_shortfall(hosts: int) -> str:
    """Why ``hosts`` more hosts' systemd would not boot, or "" when they would (or when this
    process does not run as root, whose instances the hosts use, and cannot tell)."""
    if os.geteuid() != 0:
        return ""
    need = hosts * INOTIFY_PER_HOST
    free = free_inotify_instances(need)
    if free is None or free >= need:
        return ""
    try:
        limit = Path(INOTIFY_SYSCTL).read_text().strip()
    except OSError:
        limit = "?"
    return (f"{hosts} host{'s' if hosts != 1 else ''} need{'' if hosts != 1 else 's'} about "
            f"{need} of root's inotify instances to boot, and "
            f"{free} are free (fs.inotify.max_user_instances = {limit}, shared by every "
            "container's systemd); take other labs down (their containers: docker ps "
            f"--filter label={LABEL}) or raise the limit: "
            "sysctl -w fs.inotify.max_user_instances=1024")


# ------------------------------------------------------------------------------- the lab

class Lab:
    """One lab, identified by its directory."""

    def __init__(self, lab_dir: str | Path = ".lab", log: Log = _nolog) -> None:
        self.dir = Path(lab_dir).resolve()
        self.id = lab_id(self.dir)
        self.log = log
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def state(self) -> LabState:
        return LabState.load(self.dir)

    def exists(self) -> bool:
        return (self.dir / "lab.json").exists()

    # -- paths of the files a user gets
    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yaml"

    def _tls(self) -> TlsFiles:
        p = self.dir / "pki"
        return TlsFiles(str(p / "ca.crt"), str(p / "client.crt"), str(p / "client.key"))

    # ---------------------------------------------------------------- up
    def up(self, members: int = 3, runtime: str = "static-pod", version: str = "3.5",
           keys: int = 1000, auth: bool = False, etcd_binary: str | None = None,
           wal_dir: str = "", data_disk: bool = False) -> LabState:
        """``version``: one etcd version ("3.5", "3.5.30") or a comma list, one per host;
        ``etcd_binary``: a directory with any etcd build, for every host; ``wal_dir``: etcd's
        ``--wal-dir`` on every host, a directory on a disk of its own (a Docker volume
        mounted on its parent directory); ``data_disk``: the data dir on a disk of its own."""
        if runtime not in RUNTIMES:
            raise LabError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        if members < 1 or members > 9:
            raise LabError("a lab has 1 to 9 members")
        why = wal_dir_problem(wal_dir)
        if why is not None:
            raise LabError(why)
        if self.exists():
            return self._up_again(members, runtime, version, etcd_binary, wal_dir, data_disk)
        builds = host_builds(version, members, etcd_binary)
        files = [*LAB_FILES, *([AUTH_FILE] if auth else [])]
        foreign = [f for f in files if (self.dir / f).exists() or (self.dir / f).is_symlink()]
        if foreign:
            raise RefusedError(
                f"refusing to make a lab in {self.dir}: it already holds "
                f"{', '.join(foreign)} and no lab.json, so they are not a lab's and a lab "
                "would write over them; give `--dir` a directory of its own")
        owned = ([] if self.dir.exists() else ["./"]) + [
            f"{d}/" for d in ("pki", "ssh") if not (self.dir / d).exists()] + files
        short = inotify_shortfall(members)
        if short:
            raise LabError(f"refusing to make a lab in {self.dir}: {short}")
        t0 = time.monotonic()
        client = self.client
        tag = image.ensure_image(client, self.log)
        self.dir.mkdir(parents=True, exist_ok=True)
        mgmt_net, peer_net, mgmt_subnet, peer_subnet = self._create_networks()
        mgmt = ipaddress.ip_network(mgmt_subnet)
        peer = ipaddress.ip_network(peer_subnet)
        first = builds[0][0]
        hosts = [LabHost(name=f"etcd-{i}", container=f"{self.id}-etcd-{i}",
                         mgmt_ip=str(mgmt.network_address + 10 + i),
                         peer_ip=str(peer.network_address + 10 + i),
                         etcd_version="" if builds[i - 1][0] == first else builds[i - 1][0])
                 for i in range(1, members + 1)]
        state = LabState(id=self.id, dir=str(self.dir), runtime=runtime,
                         etcd_version=first, image=tag,
                         mgmt_network=mgmt_net, peer_network=peer_net,
                         mgmt_subnet=mgmt_subnet, peer_subnet=peer_subnet, hosts=hosts,
                         etcd_dirs={v: str(d) for v, d in builds}, owned=owned,
                         wal_dir=wal_dir, data_disk=data_disk)
        state.save()  # from here on, `lab down` can clean up whatever follows
        ca = pki.make_ca(f"{self.id}-etcd-ca")
        user_key = pki.make_ssh_key(f"{self.id}-operator")
        client_cert = pki.issue(ca, "etcd-recovery-operator", dns=[], ips=[], server=False,
                                client=True)
        self._write_user_files(state, ca, client_cert, user_key)
        host_keys = {h.name: pki.make_ssh_key(h.name) for h in hosts}
        self.log(f"starting {members} hosts ({runtime}, etcd "
                 f"{', '.join(dict.fromkeys(state.versions))})")
        with ThreadPoolExecutor(max_workers=min(4, members)) as pool:
            list(pool.map(lambda h: self._start_host(state, h, ca, host_keys[h.name], user_key),
                          hosts))
        self._write_known_hosts(state, host_keys)
        (self.dir / "inventory.yaml").write_text(self._inventory_text(state))
        self.wait_ssh(state, [h.name for h in hosts], timeout=SSH_UP_S, restart_stuck=True)
        self.wait_healthy(state, timeout=90)
        if keys:
            self.load_keys(state, keys)
        state.keys = keys
        if auth:
            self._enable_auth(state)
            (self.dir / "inventory.yaml").write_text(self._inventory_text(state))
        state.save()
        self.log(f"lab up in {time.monotonic() - t0:.1f} s")
        return state

    @property
    def password_file(self) -> Path:
        return self.dir / AUTH_FILE

    def _enable_auth(self, state: LabState) -> None:
        """User ``root`` with a random password (kept in a 0600 file), then ``auth enable``.

        The operator's client certificate names no etcd user, so with auth on the password is
        what grants access.
        """
        import secrets

        password = secrets.token_urlsafe(18)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        for args, stdin in ((["user", "add", "root", "--interactive=false"], password + "\n"),
                            (["user", "grant-role", "root", "root"], None),
                            (["auth", "enable"], None)):
            res = self.etcdctl(state, args, stdin=stdin)
            if res.returncode != 0:
                raise LabError(f"enabling auth: etcdctl {args[0]} {args[1]} failed: "
                               f"{res.stderr.strip()[-300:]}")
        state.auth = True

    def _up_again(self, members: int, runtime: str, version: str,
                  etcd_binary: str | None, wal_dir: str = "", data_disk: bool = False
                  ) -> LabState:
        """The same lab asked for again: nothing changes. Each host's version must match what
        is asked (exactly, or by its minor: "3.5" matches 3.5.16)."""
        state = self.state()
        if etcd_binary is not None:
            wanted = [binary_version(Path(etcd_binary).resolve())] * members
        else:
            parts = [p.strip() for p in version.split(",")]
            wanted = [parts[min(i, len(parts) - 1)] for i in range(members)]
        same = len(wanted) == len(state.hosts) and all(
            v == w or v.startswith(w + ".") for v, w in zip(state.versions, wanted, strict=False))
        if (len(state.hosts), state.runtime, state.wal_dir, state.data_disk) \
                != (members, runtime, wal_dir, data_disk) or not same:
            raise LabError(
                f"a different lab already exists in {self.dir} ({len(state.hosts)} members, "
                f"{state.runtime}, etcd {state.etcd_version}"
                + (f", --wal-dir {state.wal_dir}" if state.wal_dir else "")
                + (", --data-disk" if state.data_disk else "")
                + f"); run `etcd-recovery lab down --dir {self.dir}` first")
        status = self.status(state)
        if status["healthy"]:
            self.log("the lab is already up and healthy; nothing changed")
            return state
        raise LabError(f"the lab in {self.dir} exists but is not healthy (see `etcd-recovery "
                       f"lab status --dir {self.dir}`); repair it with start-etcd / "
                       f"revive-host / heal, or remove it with `lab down`")

    def _create_networks(self) -> tuple[str, str, str, str]:
        """Two /24 networks per lab: management (SSH, client port) and peer traffic."""
        import docker.errors

        used: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        for net in self.client.networks.list():
            for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, KeyError):
                    used.add(ipaddress.ip_network(cfg["Subnet"]))
        for line in subprocess.run(["ip", "-4", "route"], capture_output=True,
                                   text=True).stdout.splitlines():
            with contextlib.suppress(ValueError, IndexError):
                used.add(ipaddress.ip_network(line.split()[0], strict=False))
        labels = {LABEL: self.id}
        for n in range(16, 250):
            mgmt = ipaddress.ip_network(f"172.30.{n}.0/24")
            peer = ipaddress.ip_network(f"172.31.{n}.0/24")
            if any(mgmt.overlaps(u) or peer.overlaps(u) for u in used
                   if u.prefixlen > 0):
                continue
            names = (f"{self.id}-mgmt", f"{self.id}-peer")
            created = []
            try:
                for name, subnet in zip(names, (mgmt, peer), strict=True):
                    ipam = docker.types.IPAMConfig(pool_configs=[
                        docker.types.IPAMPool(subnet=str(subnet),
                                              gateway=str(subnet.network_address + 1))])
                    created.append(self.client.networks.create(
                        name, driver="bridge", ipam=ipam, labels=labels,
                        options={"com.docker.network.bridge.name": name[:15]}))
                return names[0], names[1], str(mgmt), str(peer)
            except docker.errors.APIError as exc:
                for net in created:
                    net.remove()
                if "overlap" in str(exc).lower() or "already" in str(exc).lower():
                    continue
                raise LabError(f"cannot create the lab networks: {exc}") from exc
        raise LabError("no free /24 subnet left in 172.30.16-249.0 for the lab")

    @staticmethod
    def _builds(state: LabState) -> dict[str, str]:
        """version -> build directory on this machine: every installed build, as a registry
        holds every image (a plan's --etcd-image or --etcd-binary may name another build than
        the lab runs), and the lab's own builds, which --etcd-binary may have given."""
        return {**{v: str(d) for v, d in installed_etcd().items()},
                **{v: state.etcd_dirs.get(v) or str(ETCD_ROOT / f"etcd-{v}")
                   for v in state.versions}}

    def _start_host(self, state: LabState, h: LabHost, ca: pki.KeyPair, host_key: pki.SshKey,
                    user_key: pki.SshKey) -> None:
        client = self.client
        net_cfg = client.api.create_networking_config({
            state.mgmt_network: client.api.create_endpoint_config(ipv4_address=h.mgmt_ip)})
        host_cfg = client.api.create_host_config(
            cap_add=["SYS_ADMIN", "NET_ADMIN"], cap_drop=[],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": "rw,exec,mode=755", "/run/lock": "rw"},
            binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                   **{d: {"bind": in_host(v), "mode": "ro"}
                      for v, d in self._builds(state).items()}},
            cgroupns="host", network_mode=state.mgmt_network, init=False)
        # The WAL's own disk: an anonymous volume (its own file system, kept across a kill and
        # a revive, removed with the container by `lab down`).
        disks = [d for d in (wal_mount(state.wal_dir),
                             DATA_DIR if state.data_disk else "") if d]
        created = client.api.create_container(
            state.image, name=h.container, hostname=h.name, detach=True,
            volumes=disks or None,
            labels={LABEL: state.id, "etcd-recovery.host": h.name},
            environment={"container": "docker"}, stop_signal="SIGRTMIN+3",
            host_config=host_cfg, networking_config=net_cfg)
        cid = created["Id"]
        client.networks.get(state.peer_network).connect(cid, ipv4_address=h.peer_ip)
        client.api.put_archive(cid, "/", host_files(state, h, ca, host_key, user_key))
        client.api.start(cid)

    def _write_user_files(self, state: LabState, ca: pki.KeyPair, client_cert: pki.KeyPair,
                          user_key: pki.SshKey) -> None:
        p = self.dir / "pki"
        p.mkdir(mode=0o700, exist_ok=True)
        (self.dir / "ssh").mkdir(mode=0o700, exist_ok=True)
        for path, data, mode in (
                (p / "ca.crt", ca.cert_pem, 0o644),
                (p / "client.crt", client_cert.cert_pem, 0o644),
                (p / "client.key", client_cert.key_pem, 0o600),
                (self.dir / "ssh" / "id_ed25519", user_key.private_openssh, 0o600),
                (self.dir / "ssh" / "id_ed25519.pub", user_key.public_line.encode() + b"\n",
                 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

    def _write_known_hosts(self, state: LabState, host_keys: dict[str, pki.SshKey]) -> None:
        lines = []
        for h in state.hosts:
            key = " ".join(host_keys[h.name].public_line.split()[:2])
            lines.append(f"{h.mgmt_ip} {key}")
        (self.dir / "known_hosts").write_text("\n".join(lines) + "\n")

    def inventory(self, state: LabState | None = None) -> Inventory:
        state = state or self.state()
        members = tuple(
            Member(name=h.name,
                   ssh=SshTarget(host=h.mgmt_ip, port=22, user="root",
                                 identity_file=str(self.dir / "ssh" / "id_ed25519"),
                                 known_hosts=str(self.dir / "known_hosts")),
                   peer_url=h.peer_url, client_url=h.client_url, data_dir="/var/lib/etcd",
                   wal_dir=state.wal_dir or None,
                   manifest="/etc/kubernetes/manifests/etcd.yaml"
                   if state.runtime == "static-pod" else None,
                   env_file=env_file_of(state),
                   unit="etcd.service" if state.runtime == "systemd" else None)
            for h in state.hosts)
        auth = EtcdAuth("root", str(self.password_file)) if state.auth else None
        return Inventory(path=str(self.inventory_path), name=state.id, runtime=state.runtime,
                         tls=self._tls(), members=members, auth=auth)

    def _inventory_text(self, state: LabState) -> str:
        text = dump_inventory(self.inventory(state))
        return (f"# Inventory of the etcd-recovery lab in {self.dir}\n"
                f"# ({len(state.hosts)} members, {state.runtime}, etcd {state.etcd_version})\n"
                + text)

    # ---------------------------------------------------------------- observing
    def etcdctl(self, state: LabState, args: list[str], endpoints: list[str] | None = None,
                timeout: float = 10.0,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        tls = self._tls()
        eps = endpoints or [h.client_url for h in state.hosts]
        argv = [str(state.etcd_bin / "etcdctl"), f"--endpoints={','.join(eps)}",
                f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}",
                "--dial-timeout=2s", f"--command-timeout={max(1, int(timeout) - 1)}s", *args]
        env = dict(os.environ)
        if state.auth and self.password_file.exists():
            # Credentials through the environment, never on a command line.
            env["ETCDCTL_USER"] = "root"
            env["ETCDCTL_PASSWORD"] = self.password_file.read_text().strip()
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5,
                                  env=env, input=stdin)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"etcdctl {' '.join(args)} timed out after {timeout} s") from exc

    def endpoint_health(self, state: LabState, h: LabHost, timeout: float = 3.0) -> bool:
        res = self.etcdctl(state, ["endpoint", "health"], [h.client_url], timeout=timeout)
        return res.returncode == 0

    def container(self, h: LabHost) -> Any:
        import docker.errors

        try:
            return self.client.containers.get(h.container)
        except docker.errors.NotFound:
            return None

    def exec(self, h: LabHost, cmd: list[str], check: bool = True) -> tuple[int, str]:
        c = self.container(h)
        if c is None or c.status != "running":
            raise LabError(f"{h.name}: host is not running")
        code, out = c.exec_run(cmd)
        text = out.decode(errors="replace") if out else ""
        if check and code != 0:
            raise LabError(f"{h.name}: {' '.join(cmd)} exited {code}: {text.strip()[-400:]}")
        return code, text

    def host_up(self, h: LabHost) -> bool:
        c = self.container(h)
        if c is None or c.status != "running":
            return False
        return ssh_banner(h.mgmt_ip, 22, timeout=1.0)

    def etcd_running(self, h: LabHost) -> bool:
        c = self.container(h)
        if c is None or c.status != "running":
            return False
        code, _ = c.exec_run(["pgrep", "-x", "etcd"])
        return bool(code == 0)

    def status(self, state: LabState | None = None) -> dict[str, Any]:
        state = state or self.state()

        def one(h: LabHost) -> dict[str, Any]:
            up = self.host_up(h)
            running = self.etcd_running(h) if up or self.container(h) is not None else False
            healthy = self.endpoint_health(state, h) if running else False
            return {"name": h.name, "ssh": f"root@{h.mgmt_ip}:22", "client_url": h.client_url,
                    "peer_url": h.peer_url, "etcd_version": state.version_of(h), "host_up": up,
                    "etcd_running": running,
                    "etcd_healthy": healthy, "partitioned": self.partitioned(h)}

        with ThreadPoolExecutor(max_workers=len(state.hosts)) as pool:
            hosts = list(pool.map(one, state.hosts))
        healthy_count = sum(1 for h in hosts if h["etcd_healthy"])
        return {"lab": state.id, "dir": state.dir, "runtime": state.runtime,
                "etcd_version": state.etcd_version, "hosts": hosts,
                "healthy_members": healthy_count, "members": len(hosts),
                "quorum": healthy_count > len(hosts) // 2,
                "healthy": healthy_count == len(hosts)}

    def partitioned(self, h: LabHost) -> bool:
        c = self.container(h)
        if c is None:
            return False
        nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return self.state().peer_network not in nets

    def wait_ssh(self, state: LabState, names: list[str], timeout: float,
                 restart_stuck: bool = False) -> None:
        """Until every host's sshd sends its banner. The hosts are asked together, and each
        banner is given SSH_BANNER_S: a loaded machine's sshd (it forks and re-executes itself
        per connection) can take over a second to send it. A host whose sshd is not listening
        refuses at once, so the longer wait costs nothing.

        ``restart_stuck`` (a fresh lab): a host still silent after ``timeout`` is restarted
        once, said with what its container and systemd show, and waited for again. Full test
        runs lost a lab now and then to one host whose sshd never answered, while the same lab
        came up in seconds alone; the error names what was seen."""
        pending = self._ssh_pending(state, names, timeout)
        if pending and restart_stuck:
            self.log(f"sshd silent on {', '.join(h.name for h in pending)} after {timeout:.0f} "
                     f"s ({self._why_silent(pending)}); restarting them once")
            for h in pending:
                c = self.container(h)
                if c is not None:
                    c.restart(timeout=5)
            pending = self._ssh_pending(state, [h.name for h in pending], timeout)
        if pending:
            raise LabError("sshd did not come up on " + ", ".join(h.name for h in pending)
                           + f" within {timeout:.0f} s ({self._why_silent(pending)})")

    def _ssh_pending(self, state: LabState, names: list[str], timeout: float) -> list[LabHost]:
        """The hosts whose sshd has sent no banner after ``timeout`` (empty: all up)."""
        pending = [state.host(n) for n in names]

        def all_up() -> bool:
            nonlocal pending
            with ThreadPoolExecutor(max_workers=len(pending)) as pool:
                up = list(pool.map(lambda h: ssh_banner(h.mgmt_ip, 22, SSH_BANNER_S), pending))
            pending = [h for h, ok in zip(pending, up, strict=True) if not ok]
            return not pending

        try:
            retry(all_up, timeout, WAIT_BACKOFF, done=bool, timed_out=lambda _: _Silent())
        except _Silent:
            pass
        return pending

    def _why_silent(self, hosts: list[LabHost]) -> str:
        """One line per host: its container's state and what its systemd says."""
        out = []
        for h in hosts:
            c = self.container(h)
            if c is None:
                out.append(f"{h.name}: no container")
                continue
            c.reload()
            if c.status != "running":
                code = (c.attrs.get("State") or {}).get("ExitCode")
                out.append(f"{h.name}: container {c.status}"
                           + (f" (status {code})" if c.status == "exited" else ""))
                continue
            _, text = self.exec(h, ["sh", "-c", "systemctl is-system-running; "
                                    "systemctl is-active ssh; systemctl --failed "
                                    "--no-legend --plain | head -n 3"], check=False)
            out.append(f"{h.name}: " + " / ".join(x.strip() for x in text.splitlines()
                                                  if x.strip()))
        return "; ".join(out)

    def wait_healthy(self, state: LabState, timeout: float,
                     names: list[str] | None = None) -> None:
        hosts = [state.host(n) for n in names] if names else state.hosts
        ok: list[bool] = []

        def all_healthy() -> bool:
            nonlocal ok
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                ok = list(pool.map(lambda h: self.endpoint_health(state, h), hosts))
            return all(ok)

        def unhealthy(_: Exception | None) -> LabError:
            bad = [h.name for h, good in zip(hosts, ok, strict=True) if not good]
            return LabError(f"etcd did not become healthy on {', '.join(bad)} within "
                            f"{timeout:.0f} s")

        retry(all_healthy, timeout, HEALTHY_BACKOFF, done=bool, timed_out=unhealthy)

    def load_keys(self, state: LabState, count: int, prefix: str = KEY_PREFIX,
                  batch: int = 100) -> None:
        """Put ``count`` keys ``<prefix><n>`` = ``value-<n>`` in transactions of ``batch``."""
        for start in range(0, count, batch):
            ops = "".join(f'put {prefix}{n:06d} "value-{n:06d}"\n'
                          for n in range(start, min(count, start + batch)))
            res = self.etcdctl(state, ["txn"], stdin="\n" + ops + "\n\n", timeout=20)
            if res.returncode != 0 or "SUCCESS" not in res.stdout:
                raise LabError(f"loading keys failed: {res.stderr.strip() or res.stdout}")

    def count_keys(self, state: LabState, prefix: str = KEY_PREFIX,
                   endpoint: str | None = None) -> int:
        res = self.etcdctl(state, ["get", prefix, "--prefix", "--keys-only", "-w", "json"],
                           [endpoint] if endpoint else None)
        if res.returncode != 0:
            raise LabError(f"counting keys failed: {res.stderr.strip()}")
        return int(json.loads(res.stdout).get("count", 0))

    # ---------------------------------------------------------------- faults
    #
    # A fault the lab reports as done holds until it is undone: a stopped etcd does not run
    # again, not even for a moment, until start-etcd (or, for a static pod, a changed
    # manifest); a partition lets nothing across, not even what was already under way, until
    # heal.

    def stop_etcd(self, name: str) -> None:
        """SIGKILL etcd and keep it down (as a crash loop would); the data dir is untouched.

        Returns once the supervisor itself keeps etcd down: kubelet-lite has seen the hold for
        the current manifest (its status says so), or systemd has stopped the unit, so that no
        back-off restart can follow.
        """
        state = self.state()
        h = state.host(name)
        if state.runtime == "static-pod":
            self._stop_static_pod(h)
        else:
            self._stop_unit(h)

    def _stop_static_pod(self, h: LabHost) -> None:
        # The hold is written whole under another name and renamed into place: kubelet-lite
        # never reads a half-written one. It is in place before etcd is killed, so the restart
        # that follows the kill already finds it; kubelet-lite also kills a pod that runs
        # while its hold is there (a start racing this one).
        _, out = self.exec(h, ["sh", "-c", (
            f"set -e; mkdir -p {HOLD_DIR}; date +%s.%N; "
            f"if [ -f {MANIFEST} ]; then "
            f"sha256sum {MANIFEST} | cut -d' ' -f1 > {HOLD_DIR}/.etcd.new; "
            f"mv -f {HOLD_DIR}/.etcd.new {HOLD_DIR}/etcd; cat {HOLD_DIR}/etcd; fi; "
            "pkill -KILL -x etcd || true")])
        since, *rest = out.split()
        digest = rest[0] if rest else ""  # no manifest: no pod, so nothing to hold

        def held() -> bool:
            _, text = self.exec(h, ["sh", "-c", f"pgrep -x etcd >/dev/null && echo running;"
                                                   f" cat {POD_STATUS} 2>/dev/null; true"])
            if text.startswith("running"):
                return False
            if not digest:
                return True
            try:
                status = json.loads(text)
            except ValueError:
                return False
            return bool(status.get("state") == "held" and status.get("digest") == digest
                        and status.get("pid") is None
                        and float(status.get("time", 0)) >= float(since))

        self._wait(held, 15, f"{h.name}: kubelet-lite did not report etcd held (is the "
                             f"manifest changing?)")

    def _stop_unit(self, h: LabHost) -> None:
        # `systemctl kill` then `stop` leaves a gap in which Restart=always could start etcd
        # again (after RestartSec). A stop whose kill signal is SIGKILL is the same crash with
        # no gap: systemd knows the unit is being stopped, so it never restarts it. The
        # drop-in lives only for this stop.
        self.exec(h, ["sh", "-c", (
            f"set -e; mkdir -p {UNIT_DROPIN_DIR}; "
            f"trap 'rm -f {UNIT_DROPIN}; rmdir {UNIT_DROPIN_DIR} 2>/dev/null || true; "
            "systemctl daemon-reload' EXIT; "
            "printf '[Service]\\nKillSignal=SIGKILL\\nSuccessExitStatus=SIGKILL\\n' "
            f"> {UNIT_DROPIN}; "
            "systemctl daemon-reload; systemctl stop etcd.service")])

        def stopped() -> bool:
            _, text = self.exec(h, ["sh", "-c", "pgrep -x etcd >/dev/null && echo running; "
                                                   "systemctl is-active etcd.service; true"])
            return text.split()[:1] == ["inactive"]

        self._wait(stopped, 15, f"{h.name}: etcd still runs")

    def start_etcd(self, name: str) -> None:
        state = self.state()
        h = state.host(name)
        if state.runtime == "static-pod":
            self.exec(h, ["rm", "-f", f"{HOLD_DIR}/etcd"])
        else:
            self.exec(h, ["systemctl", "start", "--no-block", "etcd.service"])
        self._wait(lambda: self.etcd_running(h), 15, f"{h.name}: etcd did not start")

    def kill_host(self, name: str) -> None:
        h = self.state().host(name)
        c = self.container(h)
        if c is None:
            raise LabError(f"{name}: no such container {h.container}")
        if c.status == "running":
            c.kill()
        self._wait(lambda: not self.host_up(h), 15, f"{name}: host still answers")

    def revive_host(self, name: str) -> None:
        """Boot a killed host again. A partition in place holds for it too: its network
        namespace is new, so the partition's rules are put back at once, before systemd has
        started etcd."""
        state = self.state()
        h = state.host(name)
        c = self.container(h)
        if c is None:
            raise LabError(f"{name}: no such container {h.container}")
        if c.status != "running":
            short = inotify_shortfall(1)
            if short:
                raise LabError(f"refusing to boot {name} again: {short}")
            c.start()
            for cut in state.hosts:
                if self.partitioned(cut):
                    for end, selectors in self._cut_rules(state, cut):
                        if end.name == name:
                            self.exec(h, ["sh", "-c", _add_rules(selectors)])
        self.wait_ssh(state, [name], timeout=SSH_UP_S)

    def partition(self, name: str) -> None:
        """Cut the host from its peers; it stays reachable over SSH and on its client port.

        In this order: no new connection can cross the cut; every TCP connection already
        across it is aborted, at both ends; the host leaves the peer network. Policy rules
        (``ip rule ... prohibit``) do the refusing, by destination whatever the route: this
        machine is the gateway of both lab networks and forwards between them, so without
        them a host reaches its peers' peer addresses through the management network, from
        its management address. The host refuses to send to the peer subnet; every other
        host refuses to send to the host's peer address, and from or to port 2380 to its
        management address.

        Aborting matters: a connection that merely stops carrying packets keeps what etcd
        wrote into it, and the kernel sends that once the way is open again, even when the
        etcd that wrote it was killed meanwhile (its orphaned socket lives on in the host's
        network namespace). A partition that leaked that way handed the cut-off member the
        writes it was cut off from, a second or three after heal.
        """
        state = self.state()
        h = state.host(name)
        for end, selectors in self._cut_rules(state, h):
            if self._running(end):
                self.exec(end, ["sh", "-c", _add_rules(selectors)])
        self._abort_across(state, h)
        if not self.partitioned(h):
            self.client.networks.get(state.peer_network).disconnect(h.container)

    def heal(self, name: str) -> None:
        """Undo ``partition``: the host joins the peer network while the rules still refuse
        (Docker will not join it while a route into the peer subnet is in the host's table,
        and with neither route nor rule the host would reach its peers through this machine),
        then the rules go. Connections across the cut are aborted once more first (none
        should be left), so nothing sent during the partition arrives after it."""
        state = self.state()
        h = state.host(name)
        rules = self._cut_rules(state, h)
        # A lab partitioned by an earlier version of this code has a `prohibit` route on the
        # host (and /32 ones on its peers) instead of rules: the rule first, then the route.
        self.exec(h, ["sh", "-c", _add_rules(rules[0][1])
                      + f"; ip route del prohibit {state.peer_subnet} 2>/dev/null; true"])
        self._abort_across(state, h)
        if self.partitioned(h):
            self.client.networks.get(state.peer_network).connect(h.container,
                                                                 ipv4_address=h.peer_ip)
        for end, selectors in rules:
            if self._running(end):
                self.exec(end, ["sh", "-c", _del_rules(selectors)
                                + f"; ip route del prohibit {h.peer_ip}/32 2>/dev/null; true"])

    def _running(self, h: LabHost) -> bool:
        c = self.container(h)
        return c is not None and c.status == "running"

    @staticmethod
    def _cut_rules(state: LabState, h: LabHost) -> list[tuple[LabHost, list[str]]]:
        """The rule selectors of the cut around ``h``, per host (``h`` first)."""
        mine = [f"to {state.peer_subnet}"]
        theirs = [f"to {h.peer_ip}/32", f"to {h.mgmt_ip}/32 ipproto 6 sport 2380",
                  f"to {h.mgmt_ip}/32 ipproto 6 dport 2380"]
        return [(h, mine)] + [(o, theirs) for o in state.hosts if o.name != h.name]

    def _cut_ends(self, state: LabState, h: LabHost) -> list[tuple[LabHost, list[str]]]:
        """Each running host at the cut around ``h`` (a host that is down has no sockets),
        with an ``ss`` filter for its TCP connections across the cut: any of ``h``'s peer
        traffic (port 2380, or the peer subnet) on ``h``; on the others, to ``h``'s peer
        address, or to its management address on port 2380."""
        mine = ["(", "dst", state.peer_subnet, "or", "sport", "=", ":2380", "or", "dport", "=",
                ":2380", ")"]
        theirs = ["(", "dst", f"{h.peer_ip}/32", "or", "(", "dst", f"{h.mgmt_ip}/32", "and",
                  "(", "sport", "=", ":2380", "or", "dport", "=", ":2380", ")", ")", ")"]
        ends = [(h, mine)] + [(o, theirs) for o in state.hosts if o.name != h.name]
        return [(host, expr) for host, expr in ends if self._running(host)]

    def across(self, state: LabState, h: LabHost) -> dict[str, list[str]]:
        """TCP connections (any state but listening and TIME-WAIT, which carries no data)
        across the cut around ``h``, per running host, as ``ss`` lines."""
        found: dict[str, list[str]] = {}
        for host, expr in self._cut_ends(state, h):
            _, out = self.exec(host, ["ss", "-Htn", "state", "connected", "exclude",
                                      "time-wait", *expr])
            found[host.name] = [line for line in out.splitlines() if line.strip()]
        return found

    def _abort_across(self, state: LabState, h: LabHost) -> None:
        """Abort (``ss -K``, a kernel with sock_destroy) every TCP connection across the cut
        around ``h``, at both ends; with the rules in place no new one opens."""
        for host, expr in self._cut_ends(state, h):
            self.exec(host, ["ss", "-K", "-Htn", "state", "connected", *expr])
        left = {n: lines for n, lines in self.across(state, h).items() if lines}
        if left:
            raise LabError(f"{h.name}: TCP connections across the partition survive `ss -K` "
                           "(the kernel needs CONFIG_INET_DIAG_DESTROY): "
                           + "; ".join(f"{n}: {lines[0].strip()}" for n, lines in left.items()))

    @staticmethod
    def _wait(cond: Callable[[], bool], timeout: float, message: str) -> None:
        retry(cond, timeout, WAIT_BACKOFF, done=bool,
              timed_out=lambda _: LabError(f"{message} after {timeout:.0f} s"))

    # ---------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Remove every container and network labelled with this lab's id, and the files and
        directories its ``up`` made (listed in lab.json), nothing else: a file of the user's in
        the lab directory stays, and so does a directory that still holds one.

        A directory without lab.json is refused (RefusedError): it holds no lab, and the names
        a lab writes (inventory.yaml, known_hosts, pki/, ssh/) are those of a real cluster's.
        """
        if not (self.dir / "lab.json").is_file():
            raise RefusedError(
                f"refusing to remove anything in {self.dir}: it holds no lab.json, so no lab "
                "that `etcd-recovery lab up` made; nothing was removed (Docker objects of a "
                f"lab made there would carry the label {LABEL}={self.id})")
        state = self.state()
        removed: list[str] = []
        client = self.client
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"}):
            c.remove(force=True, v=True)
            removed.append(f"container {c.name}")
        for net in client.networks.list(filters={"label": f"{LABEL}={self.id}"}):
            net.remove()
            removed.append(f"network {net.name}")
        # A lab.json from before labs recorded what they wrote: the files every lab wrote.
        owned = state.owned or [*LAB_FILES, AUTH_FILE]
        root = self.dir.resolve()
        inside = [rel for rel in owned
                  if (self.dir / rel).resolve() == root
                  or root in (self.dir / rel).resolve().parents]
        files = [rel for rel in inside if not rel.endswith("/") and rel != "lab.json"]
        for rel in [*files, "lab.json"]:  # lab.json last: an interrupted down can be rerun
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (self.dir / rel).unlink()
        for rel in sorted((r for r in inside if r.endswith("/")), key=len, reverse=True):
            with contextlib.suppress(OSError):  # only if nothing of the user's is left in it
                (self.dir / rel).rmdir()
        return removed

    def env_lines(self, state: LabState | None = None) -> list[str]:
        state = state or self.state()
        tls = self._tls()
        import shlex

        return [
            f"export ETCDCTL_ENDPOINTS={shlex.quote(','.join(h.client_url for h in state.hosts))}",
            f"export ETCDCTL_CACERT={shlex.quote(str(tls.ca))}",
            f"export ETCDCTL_CERT={shlex.quote(str(tls.cert))}",
            f"export ETCDCTL_KEY={shlex.quote(str(tls.key))}",
            f"export PATH={shlex.quote(str(state.etcd_bin))}:\"$PATH\"",
            *([ "export ETCDCTL_USER=root",
                f"export ETCDCTL_PASSWORD=\"$(cat {shlex.quote(str(self.password_file))})\""]
              if state.auth else []),
        ]


def _add_rules(selectors: list[str]) -> str:
    """Shell: a ``prohibit`` policy rule for each selector, unless there is one already."""
    return "; ".join(f"{{ ip rule list {sel} | grep -q . || ip rule add {sel} prohibit; }}"
                     for sel in selectors)


def _del_rules(selectors: list[str]) -> str:
    """Shell: every ``prohibit`` policy rule with these selectors removed."""
    return "; ".join(f"while ip rule del {sel} prohibit 2>/dev/null; do :; done"
                     for sel in selectors)


def ssh_banner(host: str, port: int, timeout: float) -> bool:
    """True when something answers on host:port with an SSH banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False
