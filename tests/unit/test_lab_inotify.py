"""The lab's check that its hosts' systemd can boot: root's inotify instances."""

from __future__ import annotations

import os

import pytest

from etcd_recovery.errors import LabError
from etcd_recovery.lab import lab


class Kernel:
    """inotify_init1 with a limit: fails once ``free`` instances are held."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.held: set[int] = set()
        self.next_fd = 100

    def init(self, flags: int) -> int:
        assert flags & os.O_CLOEXEC
        if len(self.held) >= self.free:
            return -1
        self.next_fd += 1
        self.held.add(self.next_fd)
        return self.next_fd

    def close(self, fd: int) -> None:
        self.held.remove(fd)


@pytest.mark.parametrize(("free", "up_to", "counted"), [(0, 12, 0), (5, 12, 5), (40, 12, 12)])
def test_free_instances_are_counted_up_to_the_bound_and_given_back(
        free: int, up_to: int, counted: int) -> None:
    kernel = Kernel(free)
    assert lab.free_inotify_instances(up_to, kernel.init, kernel.close) == counted
    assert kernel.held == set()


def test_this_machine_answers_and_the_count_closes_what_it_made() -> None:
    first = lab.free_inotify_instances(4)
    assert first is not None and 0 < first <= 4
    fds = set(os.listdir("/proc/self/fd"))
    lab.free_inotify_instances(4)
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_lab_too_big_for_the_free_instances_is_refused_with_the_limit_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab, "free_inotify_instances", lambda up_to: min(up_to, 13))
    assert lab.inotify_shortfall(2) == ""  # 12 needed
    said = lab.inotify_shortfall(3)
    assert said.startswith("3 hosts need about 18 of root's inotify instances to boot, "
                           "and 13 are free (fs.inotify.max_user_instances = ")
    assert "sysctl -w fs.inotify.max_user_instances=1024" in said


def test_not_root_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(lab, "free_inotify_instances", lambda up_to: 0)
    assert lab.inotify_shortfall(5) == ""


def test_a_killed_host_is_not_booted_again_without_the_instances_it_needs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """``lab revive-host`` makes the same check as ``lab up`` before it starts the container
    (a systemd without an instance exits at once, status 255, nothing logged)."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab, "free_inotify_instances", lambda up_to: min(up_to, 2))
    started: list[str] = []

    class Container:
        status = "exited"

        def start(self) -> None:
            started.append("start")

    class Host:
        container = "lab-etcd-2"

    class State:
        hosts: list[object] = []

        def host(self, name: str) -> Host:
            return Host()

    the_lab = lab.Lab(str(tmp_path))
    monkeypatch.setattr(the_lab, "state", lambda: State())
    monkeypatch.setattr(the_lab, "container", lambda h: Container())
    with pytest.raises(LabError) as err:
        the_lab.revive_host("etcd-2")
    assert str(err.value).startswith("refusing to boot etcd-2 again: 1 host needs about 6 of "
                                     "root's inotify instances to boot, and 2 are free")
    assert started == []
