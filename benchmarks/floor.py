"""The floor: the fewest, fastest commands an expert would type to recover a lab cluster.

Plain OpenSSH to the hosts (one shared connection per host, as an expert's ControlMaster
gives) and plain etcdctl from this machine, timed per phase:

1. stop etcd everywhere (all hosts at once), so that no supervisor starts it again;
2. back up every data dir (``cp -a``, all hosts at once);
3. start the kept member with ``--force-new-cluster``; poll until healthy;
4. restart it without the flag; poll until healthy;
5. for each peer: move its old data aside, member add as a learner, start it with
   ``--initial-cluster-state=existing``, promote as soon as etcd allows;
6. each member's db read once in order on its host (``dd``, all at once: ``execute``'s
   verify does the same), then one HashKV check across the members: every member answers
   (etcdctl --command-timeout long enough for 1 GB), all equal.

No checks beyond what an expert needs to go on; no journal, no lock. This is what
``execute --confirm`` is measured against (``scripts/bench``).

Usage: python benchmarks/floor.py LAB_DIR KEPT [--json] [--snapshot]

(``--snapshot``: :class:`SnapshotFloor`, the snapshot way by hand.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from etcd_recovery.lab.lab import Lab
from etcd_recovery.runtimes import config as rconf


class Floor:
    def __init__(self, lab_dir: Path, kept: str) -> None:
        self.lab = Lab(lab_dir)
        self.state = self.lab.state()
        self.kept = kept
        self.hosts = {h.name: h for h in self.state.hosts}
        self.ctl_dir = Path(tempfile.mkdtemp(prefix="floor-ssh-"))
        tls = self.lab._tls()
        self.env = {"ETCDCTL_API": "3", "ETCDCTL_CACERT": str(tls.ca),
                    "ETCDCTL_CERT": str(tls.cert), "ETCDCTL_KEY": str(tls.key),
                    "PATH": f"{self.state.etcd_bin}:/usr/bin:/bin"}
        self.static = self.state.runtime == "static-pod"
        self.cfg = "/etc/kubernetes/manifests/etcd.yaml" if self.static else "/etc/etcd/etcd.env"
        self.phases: list[tuple[str, float]] = []

    # ------------------------------------------------------------------ plumbing
    def ssh_argv(self, name: str, command: str) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(self.lab.dir / "ssh" / "id_ed25519"),
                "-o", f"UserKnownHostsFile={self.lab.dir / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.ctl_dir}/%h",
                "-o", "ControlPersist=60", f"root@{self.hosts[name].mgmt_ip}", command]

    def ssh(self, name: str, command: str, stdin: str | None = None) -> str:
        res = subprocess.run(self.ssh_argv(name, command), input=stdin, capture_output=True,
                             text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{name}: {command}: {res.stderr.strip()}")
        return res.stdout

    def ctl(self, *args: str, endpoint: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        ep = endpoint or self.hosts[self.kept].client_url
        return subprocess.run(["etcdctl", f"--endpoints={ep}", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout)

    def hashes_agree(self, members: int) -> bool:
        """One HashKV of every member, all equal. etcdctl prints a line per endpoint that
        answered and only an error for one that did not within --command-timeout (5 s by
        default, less than a member that has just installed a 1 GB snapshot can take): the
        check counts the lines, so that a member that did not answer is not passed over."""
        lines = [line for line in self.ctl("--command-timeout=120s", "endpoint", "hashkv",
                                           "--cluster", timeout=150).stdout.splitlines()
                 if line]
        return len(lines) == members and len({line.split(", ")[-1] for line in lines}) == 1

    def read_dbs(self, names: list[str]) -> None:
        """Each member's db read once in order on its host, all at once, as ``execute``'s
        verify does before its HashKV (etcd_recovery/actions.py, read_in_order_argv): bbolt
        maps the db for random access, and a HashKV of a db that has left the page cache
        faults it in 4 KiB at a time (48 s for this check on 5 members at 1 GB without it)."""
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda n: self.ssh(
                n, "dd if=/var/lib/etcd/member/snap/db of=/dev/null bs=1M status=none"),
                names))

    def until(self, fn: Any, timeout: float = 120) -> Any:
        end = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > end:
                raise RuntimeError("timed out")
            time.sleep(0.05)

    def healthy(self, name: str) -> bool:
        return self.ctl("endpoint", "health", endpoint=self.hosts[name].client_url)\
            .returncode == 0

    def phase(self, name: str, t0: float) -> float:
        now = time.monotonic()
        self.phases.append((name, now - t0))
        return now

    def all_hosts(self, fn: Any) -> None:
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(fn, self.hosts))

    # ------------------------------------------------------------------ the procedure
    def run(self, reachable: list[str]) -> list[tuple[str, float]]:
        for n in reachable:  # the SSH connections an expert already has open
            self.ssh(n, "true")
        configs = {n: self.ssh(n, f"cat {self.cfg}") for n in reachable}
        t0 = start = time.monotonic()

        def stop(n: str) -> None:
            if self.static:
                self.ssh(n, f"mv {self.cfg} /root/etcd.yaml.stopped; "
                            "while pgrep -x etcd >/dev/null; do sleep 0.05; done")
            else:
                self.ssh(n, "systemctl stop etcd.service")

        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(stop, reachable))
        t0 = self.phase("stop", t0)
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(lambda n: self.ssh(n, "cp -a /var/lib/etcd /var/lib/etcd.floor-bak"),
                          reachable))
        t0 = self.phase("backup", t0)
        kept, rt = self.kept, self.state.runtime
        forced = rconf.config_with_flags(rt, configs[kept], self.cfg,
                                         {rconf.FLAG_FORCE_NEW_CLUSTER: "true"}, ())
        self.start(kept, forced)
        self.until(lambda: self.healthy(kept))
        t0 = self.phase("force-new-cluster", t0)
        self.start(kept, configs[kept], restart=True)
        self.until(lambda: self.healthy(kept) and "force-new-cluster" not in self.ssh(
            kept, "pid=$(pgrep -x etcd | head -n1); if [ -z \"$pid\" ]; then "
                  "echo force-new-cluster; else tr '\\0' ' ' < /proc/$pid/cmdline; "
                  "tr '\\0' ' ' < /proc/$pid/environ; fi; true").lower().replace("_", "-"))
        t0 = self.phase("restart", t0)
        members = [(kept, self.hosts[kept].peer_url)]
        for n in reachable:
            if n == kept:
                continue
            h = self.hosts[n]
            self.ssh(n, "mv /var/lib/etcd/member /var/lib/etcd/member.floor-old")
            # A busy leader (sending a large snapshot) can time etcdctl out after the add went
            # through: an add that then finds the peer URL listed counts as done.
            self.until(lambda: self.ctl("member", "add", n, "--learner",  # noqa: B023
                                        f"--peer-urls={h.peer_url}").returncode == 0  # noqa: B023
                       or self.member_id(h.peer_url) is not None)  # noqa: B023
            members.append((n, h.peer_url))
            cfg = rconf.config_with_flags(rt, configs[n], self.cfg, {
                "initial-cluster": rconf.initial_cluster(members),
                "initial-cluster-state": "existing"}, ())
            self.start(n, cfg)
            mid = self.until(lambda: self.member_id(h.peer_url))  # noqa: B023
            self.until(lambda: self.ctl("member", "promote", mid).returncode == 0)  # noqa: B023
            t0 = self.phase(f"peer {n}", t0)
        self.read_dbs([n for n, _ in members])
        self.until(lambda: self.hashes_agree(len(members)), 150)
        self.phase("hashkv", t0)
        self.phases.append(("total", time.monotonic() - start))
        return self.phases

    def start(self, name: str, config: str, restart: bool = False) -> None:
        if self.static:
            self.ssh(name, f"cat > /root/etcd.yaml.new && mv /root/etcd.yaml.new {self.cfg}; "
                           "rm -f /run/kubelet-lite/hold/etcd", stdin=config)
        else:
            verb = "restart" if restart else "start"
            self.ssh(name, f"cat > {self.cfg} && systemctl {verb} --no-block etcd.service",
                     stdin=config)

    def member_id(self, peer_url: str) -> str | None:
        """The member's ID from the member list; None while etcd does not answer (a leader
        busy sending a large snapshot can time etcdctl out)."""
        for line in self.ctl("member", "list").stdout.splitlines():
            parts = line.split(", ")
            if len(parts) > 3 and parts[3] == peer_url:
                return parts[0]
        return None


class SnapshotFloor(Floor):
    """The snapshot way by hand (etcd's v3.6 recovery docs), the fewest commands:

    1. stop etcd everywhere; 2. back up every data dir (as the other floor does);
    3. start the kept member alone with ``--force-new-cluster``, ``etcdctl snapshot save`` from
       it to this machine, stop it again;
    4. copy the snapshot to every host at once;
    5. on every host at once: old data moved aside, ``etcdutl snapshot restore`` with its own
       name, the new --initial-cluster, a new token, ``--bump-revision 1000000000
       --mark-compacted``;
    6. start every member at once and poll until each is healthy; 7. each db read in order,
    then one HashKV check.
    """

    def ssh_file(self, name: str, command: str, path: Path) -> None:
        with path.open("rb") as f:
            res = subprocess.run(self.ssh_argv(name, command), stdin=f, capture_output=True,
                                 timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"{name}: {command}: {res.stderr.decode().strip()}")

    def stop_one(self, n: str) -> None:
        if self.static:
            self.ssh(n, f"mv {self.cfg} /root/etcd.yaml.stopped; "
                        "while pgrep -x etcd >/dev/null; do sleep 0.05; done")
        else:
            self.ssh(n, "systemctl stop etcd.service")

    def run(self, reachable: list[str]) -> list[tuple[str, float]]:
        for n in reachable:
            self.ssh(n, "true")
        configs = {n: self.ssh(n, f"cat {self.cfg}") for n in reachable}
        t0 = start = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(self.stop_one, reachable))
        t0 = self.phase("stop", t0)
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(lambda n: self.ssh(n, "cp -a /var/lib/etcd /var/lib/etcd.floor-bak"),
                          reachable))
        t0 = self.phase("backup", t0)
        kept, rt = self.kept, self.state.runtime
        forced = rconf.config_with_flags(rt, configs[kept], self.cfg,
                                         {rconf.FLAG_FORCE_NEW_CLUSTER: "true"}, ())
        self.start(kept, forced)
        self.until(lambda: self.healthy(kept))
        snap = self.ctl_dir / "snapshot.db"
        saved = self.ctl("snapshot", "save", str(snap))
        if saved.returncode != 0:
            raise RuntimeError(f"snapshot save: {saved.stderr}")
        self.stop_one(kept)
        t0 = self.phase("snapshot", t0)
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(lambda n: self.ssh_file(n, "cat > /root/snapshot.db", snap),
                          reachable))
        t0 = self.phase("copy", t0)
        cluster = rconf.initial_cluster([(n, self.hosts[n].peer_url) for n in reachable])
        version = self.state.version_of(self.hosts[kept])

        def restore(n: str) -> None:
            self.ssh(n, "mv /var/lib/etcd/member /var/lib/etcd/member.floor-old && "
                        f"/opt/etcd-{version}/etcdutl snapshot restore /root/snapshot.db "
                        f"--name {n} --initial-cluster {cluster} --initial-advertise-peer-urls "
                        f"{self.hosts[n].peer_url} --initial-cluster-token floor-new "
                        "--bump-revision 1000000000 --mark-compacted "
                        "--data-dir /var/lib/etcd/floor-new && "
                        "mv /var/lib/etcd/floor-new/member /var/lib/etcd/member")

        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(restore, reachable))
        t0 = self.phase("restore", t0)
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(lambda n: self.start(n, configs[n]), reachable))
        for n in reachable:
            self.until(lambda: self.healthy(n))  # noqa: B023
        t0 = self.phase("start", t0)
        self.read_dbs(list(reachable))
        self.until(lambda: self.hashes_agree(len(reachable)), 150)
        self.phase("hashkv", t0)
        self.phases.append(("total", time.monotonic() - start))
        return self.phases


def main() -> None:
    lab_dir, kept = Path(sys.argv[1]), sys.argv[2]
    floor = (SnapshotFloor if "--snapshot" in sys.argv else Floor)(lab_dir, kept)
    reachable = [n for n in floor.hosts if floor.lab.host_up(floor.hosts[n])]
    phases = floor.run(reachable)
    if "--json" in sys.argv:
        print(json.dumps(phases))
    else:
        for name, seconds in phases:
            print(f"{name:24s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
