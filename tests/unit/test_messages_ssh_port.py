"""An SSH port written in the inventory wins over ~/.ssh/config, 22 included; a port left
out is the config's (else 22)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_recovery.inventory import parse_inventory
from etcd_recovery.transport.base import HostTarget
from etcd_recovery.transport.factory import ssh_transport
from etcd_recovery.transport.ssh import SshTransport
from etcd_recovery.transport.ssh_config import resolve


def _inventory(ssh: str) -> Any:
    return yaml.safe_load(
        "cluster: {name: c, runtime: systemd}\n"
        "members:\n"
        f"  - {{name: a, ssh: {{host: etcd-a{ssh}}}, peer_url: 'https://10.0.0.1:2380',\n"
        "     client_url: 'https://10.0.0.1:2379'}\n")


@pytest.mark.parametrize(("ssh", "port"), [(", port: 22", 22), (", port: 2200", 2200),
                                           ("", 2222)])
def test_the_inventory_port_wins_over_ssh_config(ssh: str, port: int, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host etcd-a\n    HostName 10.0.0.1\n    Port 2222\n")
    member = parse_inventory(_inventory(ssh), "inv.yaml").members[0]
    transport = ssh_transport(member)
    assert isinstance(transport, SshTransport)
    route = resolve("a", replace(transport.target, ssh_config=str(config)))
    assert (route.final.hostname, route.final.port) == ("10.0.0.1", port)


def test_no_port_anywhere_is_22(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host other\n    Port 2222\n")
    route = resolve("a", HostTarget(host="etcd-a", ssh_config=str(config)))
    assert route.final.port == 22 and route.final.known_hosts_name == "etcd-a"
    route = resolve("a", HostTarget(host="etcd-a", port=22, ssh_config=str(config)))
    assert route.final.port == 22


def test_one_mapping_from_ssh_settings_to_a_host_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """inspect's transports (from a member) and discover's (from its options, before there is
    an inventory) reach a host the same way: both go through host_target."""
    from etcd_recovery import discover
    from etcd_recovery.errors import UsageError
    from etcd_recovery.importer import ImportedHost
    from etcd_recovery.inventory import SshTarget
    from etcd_recovery.transport.factory import host_target

    ssh = SshTarget(host="h1", port=2200, user="ops", identity_file="/k/id",
                    known_hosts="/k/known", jump="bastion:22", sudo=True)
    assert host_target(ssh) == HostTarget(
        host="h1", port=2200, user="ops", identity_file="/k/id", known_hosts="/k/known",
        proxy_jump="bastion:22", sudo=True, probe_timeout=1.0)
    assert host_target(replace(ssh, connect_timeout=2.5)).probe_timeout == 2.5

    seen: list[HostTarget] = []

    def probe_all(addresses: list[str], connect: Any) -> Any:
        seen.extend(connect(a).target for a in addresses)
        raise UsageError("enough")

    monkeypatch.setattr(discover, "probe_all", probe_all)
    common = {"user": None, "port": None, "identity_file": None, "known_hosts": "/k/known",
              "jump": "bastion:22", "sudo": True}
    with pytest.raises(UsageError):
        discover.probe([ImportedHost("h1", user="ops", port=2200, identity_file="/k/id")],
                       common)
    assert seen == [host_target(ssh)]
