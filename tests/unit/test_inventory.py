"""Inventory parsing: good files load; every bad field gets one message naming file, member
and field, and exit code 2 from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import EXIT_USAGE, InventoryError
from etcd_recovery.inventory import dump_inventory, load_inventory, parse_inventory

CLI = str(Path(sys.executable).parent / "etcd-recovery")


def good() -> dict[str, Any]:
    return {
        "cluster": {"name": "prod-east", "runtime": "static-pod"},
        "tls": {"ca": "pki/ca.crt", "cert": "pki/client.crt", "key": "pki/client.key"},
        "ssh": {"user": "root", "identity_file": "ssh/id", "known_hosts": "known_hosts"},
        "members": [
            {"name": f"etcd-{i}", "ssh": {"host": f"10.0.0.{i}"},
             "peer_url": f"https://10.0.0.{i}:2380", "client_url": f"https://10.0.0.{i}:2379"}
            for i in (1, 2, 3)
        ],
    }


def write(tmp_path: Path, data: Any) -> Path:
    p = tmp_path / "inventory.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_good_inventory_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, good()))
    assert inv.name == "prod-east" and inv.runtime == "static-pod"
    assert [m.name for m in inv.members] == ["etcd-1", "etcd-2", "etcd-3"]
    m = inv.members[1]
    assert m.ssh.host == "10.0.0.2" and m.ssh.user == "root"
    assert m.ssh.identity_file == str(tmp_path / "ssh" / "id")
    assert inv.tls.ca == str(tmp_path / "pki" / "ca.crt")
    assert m.data_dir == "/var/lib/etcd"
    assert m.manifest == "/etc/kubernetes/manifests/etcd.yaml" and m.env_file is None
    assert m.client_hostport == ("10.0.0.2", 2379)


def test_systemd_defaults_and_round_trip(tmp_path: Path) -> None:
    data = good()
    data["cluster"]["runtime"] = "systemd"
    inv = load_inventory(write(tmp_path, data))
    assert inv.members[0].env_file == "/etc/etcd/etcd.env"
    assert inv.members[0].unit == "etcd.service"
    again = parse_inventory(yaml.safe_load(dump_inventory(inv)), "again")
    assert again.members == inv.members


BAD = [
    # (mutation, member, field, words in the message)
    (lambda d: d["cluster"].pop("runtime"), None, "cluster.runtime", "required"),
    (lambda d: d["cluster"].update(runtime="k8s"), None, "cluster.runtime", "not one of"),
    (lambda d: d["members"][1].pop("peer_url"), "etcd-2", "peer_url", "required"),
    (lambda d: d["members"][1].update(peer_url="10.0.0.2:2380"), "etcd-2", "peer_url",
     "https://HOST:PORT"),
    (lambda d: d["members"][2].update(client_url="https://h:2379/x"), "etcd-3", "client_url",
     "https://HOST:PORT"),
    (lambda d: d["members"][0]["ssh"].update(host="10.0.0.1;reboot"), "etcd-1", "ssh.host",
     "a host name (letters, digits, . and -) or an IP address"),
    (lambda d: d["cluster"].update(name="k8s_etcd"), None, "cluster.name",
     "lower-case letters, digits, . and -"),
    (lambda d: d["members"][0].update(name="etcd 1"), "#1", "name", "not a valid member name"),
    (lambda d: d["members"][0].update(data_dir="/var/lib/$(id)"), "etcd-1", "data_dir",
     "absolute path"),
    (lambda d: d["members"][0].update(data_dir="relative/dir"), "etcd-1", "data_dir",
     "absolute path"),
    (lambda d: d["members"][2].update(name="etcd-1"), "etcd-1", "name", "used by member"),
    (lambda d: d["members"][2].update(peer_url="https://10.0.0.1:2380"), "etcd-3", "peer_url",
     "used by member"),
    (lambda d: d["members"][1]["ssh"].update(port=70000), "etcd-2", "ssh.port",
     "not a port number"),
    (lambda d: d["members"][1]["ssh"].update(sudo="yes"), "etcd-2", "ssh.sudo", "true or false"),
    (lambda d: d["members"][1]["ssh"].update(user="root`x`"), "etcd-2", "ssh.user",
     "user name"),
    (lambda d: d["members"][1].update(data_dri="/x"), None, "members[1]", "unknown field"),
    (lambda d: d["members"][1].update(env_file="/etc/etcd/etcd.env"), "etcd-2", "env_file",
     "systemd runtime only"),
    (lambda d: d.update(members=[]), None, "members", "non-empty list"),
    (lambda d: d["tls"].pop("key"), None, "tls", "together"),
]


@pytest.mark.parametrize(("mutate", "member", "field", "words"), BAD)
def test_bad_field_is_named(tmp_path: Path, mutate: Any, member: str | None, field: str,
                            words: str) -> None:
    data = good()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(InventoryError) as exc:
        load_inventory(path)
    msg = str(exc.value)
    assert msg.startswith(str(path))
    assert f"field {field!r}" in msg
    if member is not None:
        assert f"member {member!r}" in msg
    assert words in msg
    assert exc.value.exit_code == EXIT_USAGE


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster:\n  name: x\n members: [\n")
    with pytest.raises(InventoryError, match=r"line \d+, column \d+"):
        load_inventory(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path / "nope.yaml")


def test_cli_exit_code_2_and_one_clear_line(tmp_path: Path) -> None:
    data = good()
    data["members"][1]["ssh"]["host"] = "10.0.0.2 && rm -rf /"
    path = write(tmp_path, data)
    proc = subprocess.run([CLI, "inventory", "check", "-i", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "member 'etcd-2'" in proc.stderr and "ssh.host" in proc.stderr
    # Every local file the inventory names must be there: named as missing, then accepted.
    missing = subprocess.run([CLI, "inventory", "check", "-i", str(write(tmp_path, good()))],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "tls.ca" in missing.stderr and "no such file" in \
        missing.stderr, missing.stderr
    for rel in ("pki/ca.crt", "pki/client.crt", "pki/client.key", "ssh/id", "known_hosts"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    ok = subprocess.run([CLI, "inventory", "check", "-i", str(write(tmp_path, good())),
                         "-o", "json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert '"etcd-3"' in ok.stdout


@settings(max_examples=300, deadline=1000)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=5),
                    max_leaves=30))
def test_any_yaml_tree_gives_inventory_or_inventory_error(data: Any) -> None:
    try:
        parse_inventory(data, "fuzz.yaml")
    except InventoryError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=200, deadline=1000)
@given(st.binary(max_size=400))
def test_any_bytes_give_inventory_or_inventory_error(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "inv.yaml"
    path.write_bytes(raw)
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert str(exc).startswith(str(path))


def test_auth_section(tmp_path: Path) -> None:
    data = good()
    data["auth"] = {"user": "root", "password_file": "secrets/etcd"}
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "etcd").write_text("s3cret\n")
    inv = load_inventory(write(tmp_path, data))
    assert inv.auth is not None and inv.auth.password_file == str(tmp_path / "secrets/etcd")
    assert inv.credentials() == ("root", "s3cret")
    assert "s3cret" not in repr(inv)
    data["auth"] = {"user": "root"}
    with pytest.raises(InventoryError, match="auth.password_file"):
        load_inventory(write(tmp_path, data))
    data["auth"] = {"user": "root", "password_file": "missing"}
    inv = load_inventory(write(tmp_path, data))
    with pytest.raises(InventoryError, match="cannot read") as exc:
        inv.credentials()
    assert "s3cret" not in str(exc.value)


@given(st.text(max_size=80))
def test_discovered_cluster_name_always_loads(token: str) -> None:
    """Whatever token the hosts' flags carry, discover names the cluster so that the inventory
    it writes loads (kubespray's k8s_etcd once produced an inventory that did not)."""
    from etcd_recovery.discover import Finding, _cluster_name
    name = _cluster_name([Finding("10.0.0.1", runtime="systemd",
                                  flags={"initial-cluster-token": token})])
    data = good()
    data["cluster"]["name"] = name
    assert parse_inventory(data, "discovered").name == name


def test_kubespray_token_becomes_a_valid_name() -> None:
    from etcd_recovery.discover import Finding, _cluster_name
    assert _cluster_name([Finding("h", runtime="systemd",
                                  flags={"initial-cluster-token": "k8s_etcd"})]) == "k8s-etcd"
