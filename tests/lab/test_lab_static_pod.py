"""Lab verbs on a static-pod lab (kubeadm layout, kubelet-lite supervisor), etcd 3.5."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .conftest import LabHandle, ssh
from .verbs import (  # noqa: F401 - collected here, run against this module's lab
    test_kill_host_then_revive,
    test_partition_holds_through_a_reboot,
    test_partition_keeps_ssh_but_cuts_peers,
    test_partition_lets_nothing_through,
    test_stop_etcd_on_two_loses_quorum,
    test_stopped_etcd_stays_down,
    test_up_again_changes_nothing,
    test_up_is_healthy_with_tls_and_keys,
    wait_for,
)


@pytest.fixture(scope="module")
def lab(make_module_lab: Callable[..., LabHandle]) -> LabHandle:
    return make_module_lab(members=3, runtime="static-pod", version="3.5-old")


def etcd_pid(lab: LabHandle, name: str) -> str:
    return ssh(lab.dir, lab.ip(name), "pgrep -x etcd || true").stdout.strip()


def test_supervisor_follows_the_manifest(lab: LabHandle) -> None:
    """kubelet-lite stops etcd when the manifest leaves, starts it when it returns, and
    restarts it when the manifest changes."""
    ip = lab.ip("etcd-2")
    res = ssh(lab.dir, ip, "cat /proc/$(pgrep -x etcd)/cmdline | tr '\\0' ' '")
    assert "--name=etcd-2" in res.stdout and "--initial-cluster=" in res.stdout
    assert ssh(lab.dir, ip, "mv /etc/kubernetes/manifests/etcd.yaml /root/").returncode == 0
    wait_for(lambda: etcd_pid(lab, "etcd-2") == "", 15, "etcd to stop with its manifest gone")
    time.sleep(1.0)
    assert etcd_pid(lab, "etcd-2") == "", "no manifest, no etcd"
    assert ssh(lab.dir, ip, "mv /root/etcd.yaml /etc/kubernetes/manifests/").returncode == 0
    wait_for(lambda: etcd_pid(lab, "etcd-2") != "", 15, "etcd to start with its manifest back")
    first = etcd_pid(lab, "etcd-2")
    assert ssh(lab.dir, ip, "sed -i 's/--snapshot-count=10000/--snapshot-count=10001/' "
                            "/etc/kubernetes/manifests/etcd.yaml").returncode == 0
    wait_for(lambda: etcd_pid(lab, "etcd-2") not in ("", first), 20,
             "etcd to be restarted with the changed manifest")
    res = ssh(lab.dir, ip, "cat /proc/$(pgrep -x etcd)/cmdline | tr '\\0' ' '")
    assert "--snapshot-count=10001" in res.stdout
    from .verbs import healthy

    wait_for(lambda: healthy(lab, "etcd-2"), 30, "etcd-2 healthy again")

