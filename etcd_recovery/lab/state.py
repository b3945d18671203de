"""A lab's bookkeeping: its hosts and what ``lab up`` made (``lab.json`` in the lab's
directory)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LabError, UsageError
from .installed import ETCD_ROOT, installed_etcd, vkey


@dataclass
class LabHost:
    name: str
    container: str
    mgmt_ip: str
    peer_ip: str
    etcd_version: str = ""     # this host's etcd when it differs across the lab

    @property
    def client_url(self) -> str:
        return f"https://{self.mgmt_ip}:2379"

    @property
    def peer_url(self) -> str:
        return f"https://{self.peer_ip}:2380"


@dataclass
class LabState:
    id: str
    dir: str
    runtime: str
    etcd_version: str          # full version, e.g. "3.5.16" (the first host's)
    image: str
    mgmt_network: str
    peer_network: str
    mgmt_subnet: str
    peer_subnet: str
    hosts: list[LabHost] = field(default_factory=list)
    keys: int = 0
    auth: bool = False  # etcd --auth on: user root, password in <dir>/etcd-root-password
    etcd_dirs: dict[str, str] = field(default_factory=dict)  # version -> build dir here
    # etcd's --wal-dir on every host ("": none): a directory on a disk of its own (a Docker
    # volume mounted on its parent directory, removed with the container)
    wal_dir: str = ""
    # the data dir (/var/lib/etcd) on a disk of its own too (a Docker volume, removed with the
    # container), as doctor's data-dir-fs check asks of a real host
    data_disk: bool = False
    # What `up` made in the lab directory, relative to it: files, and directories (ending in
    # "/", "./" for the lab directory itself) it created. `down` removes these and no more.
    owned: list[str] = field(default_factory=list)

    @property
    def etcd_bin(self) -> Path:
        """The operator's etcdctl for this lab (``lab env``, the lab's own calls): the newest
        installed build of the lab's minor version, as an operator keeps a current client. A
        lab's own build can be a broken client: etcdctl 3.6.0's ``endpoint health`` exits with
        "conflicting environment variable is shadowed by corresponding command-line flag"
        for ETCDCTL_KEY set in the environment."""
        own = Path(self.etcd_dirs.get(self.etcd_version)
                   or ETCD_ROOT / f"etcd-{self.etcd_version}")
        if own.parent != ETCD_ROOT:
            return own  # a build given with --etcd-binary: its own etcdctl
        minor = ".".join(self.etcd_version.split(".")[:2])
        installed = installed_etcd()
        same = [v for v in installed if v.startswith(minor + ".")]
        return installed[max(same, key=vkey)] if same else own

    def version_of(self, h: LabHost) -> str:
        return h.etcd_version or self.etcd_version

    @property
    def versions(self) -> list[str]:
        return [self.version_of(h) for h in self.hosts]

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise UsageError(f"no lab host named {name!r}; hosts are "
                       + ", ".join(h.name for h in self.hosts))

    def save(self) -> None:
        path = Path(self.dir) / "lab.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, lab_dir: str | Path) -> LabState:
        path = Path(lab_dir) / "lab.json"
        try:
            data = json.loads(path.read_text())
            data["hosts"] = [LabHost(**h) for h in data["hosts"]]
            return cls(**data)
        except FileNotFoundError as exc:
            raise LabError(f"no lab in {lab_dir} (no lab.json); run `etcd-recovery lab up`"
                           f" first") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(f"{path}: unreadable lab state: {exc}") from exc


# Every file `up` writes in the lab directory (lab.tmp: while lab.json is replaced).
LAB_FILES = ("lab.json", "lab.tmp", "pki/ca.crt", "pki/client.crt", "pki/client.key",
             "ssh/id_ed25519", "ssh/id_ed25519.pub", "known_hosts", "inventory.yaml")
AUTH_FILE = "etcd-root-password"


def lab_id(lab_dir: Path) -> str:
    return "erl" + hashlib.sha256(str(lab_dir.resolve()).encode()).hexdigest()[:8]
