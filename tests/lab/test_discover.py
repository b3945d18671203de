"""inventory discover on real hosts: from their addresses alone to an inventory plan accepts."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable

import yaml

from .conftest import LabHandle, cli


def discover(lab: LabHandle, names: list[str], *extra: str) -> dict:  # type: ignore[type-arg]
    out = lab.dir / "discovered.yaml"
    cli("inventory", "discover", *(lab.ip(n) for n in names), "--user", "root",
        "--identity-file", str(lab.dir / "ssh" / "id_ed25519"),
        "--known-hosts", str(lab.dir / "known_hosts"),
        "--fetch-client-cert", str(lab.dir / "fetched"), "-o", str(out), *extra)
    data: dict = yaml.safe_load(out.read_text())  # type: ignore[type-arg]
    return data


def same(found: dict, lab_inv: dict, names: list[str],  # type: ignore[type-arg]
         client_too: list[str]) -> None:
    assert found["cluster"]["runtime"] == lab_inv["cluster"]["runtime"]
    mine = {m["name"]: m for m in found["members"]}
    theirs = {m["name"]: m for m in lab_inv["members"]}
    assert sorted(mine) == sorted(theirs)
    for n in names:
        for key in ("peer_url", "data_dir", "env_file", "unit", "manifest"):
            assert mine[n].get(key) == theirs[n].get(key), (n, key)
    for n in client_too:
        assert mine[n]["client_url"] == theirs[n]["client_url"]
        assert mine[n]["ssh"]["host"] == theirs[n]["ssh"]["host"]


def check_runtime(make_lab: Callable[..., LabHandle], runtime: str, version: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version=version, keys=100)
    lab_inv = yaml.safe_load((lab.dir / "inventory.yaml").read_text())
    cli("lab", "stop-etcd", "etcd-2", "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    everyone = ["etcd-1", "etcd-2", "etcd-3"]
    found = discover(lab, everyone)
    same(found, lab_inv, everyone, everyone)
    for f in (lab.dir / "fetched").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # plan accepts it (the cross-check against the hosts included).
    cli("plan", "-i", str(lab.dir / "discovered.yaml"), "-o", "json")
    # The same hosts from a kubespray INI inventory and from a vmware hosts.json.
    key = lab.dir / "ssh" / "id_ed25519"
    (lab.dir / "hosts.ini").write_text("[all]\n" + "".join(
        f"node{n[-1]} ansible_host={lab.ip(n)} etcd_member_name={n}\n" for n in everyone)
        + f"[etcd]\nnode1\nnode2\nnode3\n[all:vars]\nansible_user=root\n"
          f"ansible_ssh_private_key_file={key}\n")
    (lab.dir / "hosts.json").write_text(json.dumps([
        {"name": f"cp-{n}", "member_name": n, "host": lab.ip(n), "username": "root",
         "private_key": str(key)} for n in everyone]))
    for src in ("hosts.ini", "hosts.json"):
        out = lab.dir / f"imported-{src}.yaml"
        cli("inventory", "import", str(lab.dir / src), "--known-hosts",
            str(lab.dir / "known_hosts"), "-o", str(out))
        same(yaml.safe_load(out.read_text()), lab_inv, everyone, everyone)
        cli("inventory", "check", "-i", str(out))
    # A source that names a member wrongly is reported, and nothing is written.
    (lab.dir / "wrong.json").write_text(json.dumps([
        {"name": "x", "member_name": "etcd-9", "host": lab.ip("etcd-1"), "username": "root",
         "private_key": str(key)}]))
    bad = cli("inventory", "import", str(lab.dir / "wrong.json"), "--known-hosts",
              str(lab.dir / "known_hosts"), "-o", str(lab.dir / "wrong.yaml"), check=False)
    assert bad.returncode == 3 and "etcd-9" in bad.stderr and "etcd-1" in bad.stderr
    assert not (lab.dir / "wrong.yaml").exists()
    # A host down: the others name it from --initial-cluster, marked as not reached.
    cli("lab", "kill-host", "etcd-3", "--dir", str(lab.dir))
    res = cli("inventory", "discover", *(lab.ip(n) for n in everyone), "--user", "root",
              "--identity-file", str(lab.dir / "ssh" / "id_ed25519"),
              "--known-hosts", str(lab.dir / "known_hosts"), "-o",
              str(lab.dir / "down.yaml"), "--fetch-client-cert", str(lab.dir / "fetched2"))
    assert "was not reached" in res.stderr and "etcd-3" in res.stderr
    text = (lab.dir / "down.yaml").read_text()
    assert "# MISSING:" in text and "etcd-3" in text.split("members:")[0]
    down = yaml.safe_load(text)
    same(down, lab_inv, everyone, ["etcd-1", "etcd-2"])
    # plan accepts it too: the member not reached is planned as unreachable.
    planned = json.loads(cli("plan", "-i", str(lab.dir / "down.yaml"), "-o", "json").stdout)
    assert planned["unreachable"] == ["etcd-3"]


def test_discover_static_pod(make_lab: Callable[..., LabHandle]) -> None:
    check_runtime(make_lab, "static-pod", "3.4")


def test_discover_systemd(make_lab: Callable[..., LabHandle]) -> None:
    check_runtime(make_lab, "systemd", "3.6-newest")
