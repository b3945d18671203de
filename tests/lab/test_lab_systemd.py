"""Lab verbs on a systemd lab (unit + /etc/etcd/etcd.env, real systemd as PID 1), etcd 3.4."""

from __future__ import annotations

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
)


@pytest.fixture(scope="module")
def lab(make_module_lab: Callable[..., LabHandle]) -> LabHandle:
    return make_module_lab(members=3, runtime="systemd", version="3.4")


def test_etcd_is_a_real_systemd_service(lab: LabHandle) -> None:
    ip = lab.ip("etcd-1")
    res = ssh(lab.dir, ip, "readlink /proc/1/exe; systemctl is-system-running; "
                           "systemctl is-active etcd.service; "
                           "systemctl show -p MainPID --value etcd.service; pgrep -x etcd")
    exe, system, active, main_pid, pid = res.stdout.split()
    assert exe.endswith("systemd")
    assert system in ("running", "degraded")
    assert active == "active"
    assert main_pid == pid
    env = ssh(lab.dir, ip, "cat /etc/etcd/etcd.env").stdout
    assert "ETCD_NAME=etcd-1" in env and "ETCD_CLIENT_CERT_AUTH=true" in env
    assert ssh(lab.dir, ip, "/usr/local/bin/etcd --version").stdout.count("3.4.") >= 1

