"""The inventory against the hosts: configuration text and process flags in, checks out."""

from __future__ import annotations

from etcd_recovery.crosscheck import check_member, mismatches, process_flags
from etcd_recovery.inventory import Member, SshTarget
from etcd_recovery.lab.configs import etcd_flags, static_pod_manifest, systemd_env
from etcd_recovery.lab.state import LabHost

HOSTS = [LabHost(name=f"etcd-{i}", container=f"c{i}", mgmt_ip=f"10.9.0.{i}",
                 peer_ip=f"10.9.1.{i}") for i in (1, 2, 3)]
MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
ENV = "/etc/etcd/etcd.env"


def member(i: int = 0, **kw: str) -> Member:
    h = HOSTS[i]
    fields = {"name": h.name, "peer_url": h.peer_url, "client_url": h.client_url,
              "data_dir": "/var/lib/etcd", **kw}
    return Member(ssh=SshTarget(host=h.mgmt_ip), manifest=MANIFEST, env_file=ENV,
                  unit="etcd.service", **fields)


def text(runtime: str, i: int = 0) -> str:
    flags = etcd_flags(HOSTS[i], HOSTS, "/pki", "tok")
    return static_pod_manifest(flags, "3.5.16") if runtime == "static-pod" else \
        systemd_env(flags)


def test_a_matching_inventory_passes_every_check() -> None:
    for runtime, path in (("static-pod", MANIFEST), ("systemd", ENV)):
        checks = check_member(member(), runtime, path, text(runtime), None, None, "etcd-1")
        assert {c.field for c in checks} == {"name", "data_dir", "peer_url", "client_url",
                                             "membership name"}
        assert not mismatches(checks)


def test_each_mistake_is_named_with_both_values_and_the_fix() -> None:
    cases = [
        (member(data_dir="/var/lib/etcdx"), "data_dir", "/var/lib/etcdx", "/var/lib/etcd"),
        (member(name="etcd-2"), "name", "etcd-2", "etcd-1"),
        (member(peer_url="https://10.9.1.1:2390"), "peer_url", "https://10.9.1.1:2390",
         "https://10.9.1.1:2380"),
        (member(client_url="https://10.9.0.1:2479"), "client_url", "https://10.9.0.1:2479",
         "https://10.9.0.1:2379"),
    ]
    for m, field, inv, host in cases:
        bad = mismatches(check_member(m, "systemd", ENV, text("systemd"), None, None, None))
        assert [c.field for c in bad] == [field], bad
        msg = bad[0].message("inv.yaml")
        assert inv in msg and host in msg and ENV in msg and "inv.yaml" in msg, msg


def test_swapped_names_are_caught_by_the_members_own_view() -> None:
    # The inventory's etcd-1 is the host whose etcd calls itself etcd-2 (config and membership).
    checks = check_member(member(0, name="etcd-2"), "static-pod", MANIFEST,
                          text("static-pod", 0), None, None, "etcd-1")
    fields = {c.field for c in mismatches(checks)}
    assert fields == {"name", "membership name"}


def test_the_wrong_runtime_or_a_missing_file_is_a_mismatch() -> None:
    bad = mismatches(check_member(member(), "static-pod", MANIFEST, None,
                                  "stat /etc/kubernetes/manifests/etcd.yaml: no such file",
                                  None, None))
    assert bad[0].field == "runtime" and "no such file" in str(bad[0].host)
    # An env file read as a manifest is not a static-pod configuration.
    bad = mismatches(check_member(member(), "static-pod", MANIFEST, text("systemd"), None,
                                  None, None))
    assert bad and bad[0].field == "runtime"


def test_the_running_process_is_checked_too() -> None:
    cmd = b"\0".join([b"etcd", b"--name=etcd-1", b"--data-dir", b"/var/lib/etcd-old",
                      b"--initial-advertise-peer-urls=https://10.9.1.1:2380",
                      b"--advertise-client-urls=https://10.9.0.1:2379"]) + b"\0"
    flags = process_flags(cmd, b"PATH=/bin\0ETCD_SNAPSHOT_COUNT=10\0")
    assert flags["data-dir"] == "/var/lib/etcd-old" and flags["snapshot-count"] == "10"
    bad = mismatches(check_member(member(), "systemd", ENV, text("systemd"), None, flags,
                                  None))
    assert [(c.field, c.source) for c in bad] == [
        ("data_dir", "the running etcd's command line")]
    # systemd: the flags come from the environment the unit gave etcd.
    env = b"ETCD_NAME=etcd-1\0ETCD_DATA_DIR=/var/lib/etcd\0" \
          b"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.9.1.1:2380\0" \
          b"ETCD_ADVERTISE_CLIENT_URLS=https://10.9.0.1:2379\0"
    assert not mismatches(check_member(member(), "systemd", ENV, text("systemd"), None,
                                       process_flags(b"/usr/local/bin/etcd\0", env), None))
