"""Why systemd will not run etcd, from ``systemctl show`` and the unit's journal (as systemd
252 in the lab writes them), and the wait that fails at once on it."""

from __future__ import annotations

import time

import pytest

from etcd_recovery.errors import StepFailed
from etcd_recovery.etcdlog import Cause
from etcd_recovery.inventory import Member, SshTarget
from etcd_recovery.runtimes.systemd import UNIT_PROPERTIES, Systemd, unit_cause
from etcd_recovery.watch import wait_watching

UNIT = "etcd.service"
JOURNAL = [
    "etcd.service: Scheduled restart job, restart counter is at 2.",
    "Stopped etcd.service - etcd key-value store.",
    "Starting etcd.service - etcd key-value store...",
    "etcd.service: Failed to locate executable /nonexistent/etcd: No such file or directory",
    "etcd.service: Failed at step EXEC spawning /nonexistent/etcd: No such file or directory",
    "etcd.service: Main process exited, code=exited, status=203/EXEC",
    "etcd.service: Failed with result 'exit-code'.",
    "Failed to start etcd.service - etcd key-value store.",
]


def show(**props: str) -> str:
    base = {"LoadState": "loaded", "ActiveState": "activating", "SubState": "start",
            "Result": "success", "ExecMainCode": "0", "ExecMainStatus": "0"}
    return "".join(f"{k}={v}\n" for k, v in (base | props).items())


def test_a_command_systemd_cannot_run_is_said_with_systemds_own_line() -> None:
    cause = unit_cause(UNIT, show(SubState="auto-restart", Result="exit-code",
                                  ExecMainCode="1", ExecMainStatus="203"), JOURNAL)
    assert cause is not None
    assert cause.text == ("systemd cannot run etcd's command of etcd.service (exit status "
                          "203): Failed at step EXEC spawning /nonexistent/etcd: No such file "
                          "or directory")
    older = unit_cause(UNIT, show(SubState="auto-restart", Result="exit-code",
                                  ExecMainCode="1", ExecMainStatus="203"), JOURNAL[5:])
    assert older is not None and older.text.endswith(": Main process exited, code=exited, "
                                                     "status=203/EXEC")


def test_a_unit_systemd_gave_up_on_or_cannot_load() -> None:
    limit = JOURNAL[:3] + ["etcd.service: Start request repeated too quickly.",
                           "etcd.service: Failed with result 'start-limit-hit'."]
    gave_up = unit_cause(UNIT, show(ActiveState="failed", SubState="failed",
                                    Result="start-limit-hit"), limit)
    assert gave_up is not None and gave_up.text == (
        "systemd gave up starting etcd.service (Result=start-limit-hit): Start request "
        "repeated too quickly.")
    masked = unit_cause(UNIT, show(LoadState="masked", ActiveState="inactive"), [])
    assert masked is not None and masked.text == "systemd cannot load etcd.service " \
        "(LoadState=masked)"


def test_an_exit_the_unit_showed_when_the_wait_began_is_an_earlier_tries() -> None:
    """A resumed wait: its cause undone, systemd restarts etcd on its own in a moment; the
    203 left from before is no cause. A new failed try (another exit time) is."""
    failing = show(SubState="auto-restart", Result="exit-code", ExecMainCode="1",
                   ExecMainStatus="203", ExecMainExitTimestampMonotonic="5000000")
    assert unit_cause(UNIT, failing, JOURNAL, before=failing) is None
    again = failing.replace("=5000000", "=7100000")
    assert unit_cause(UNIT, again, JOURNAL, before=failing) is not None
    gave_up = show(ActiveState="failed", Result="start-limit-hit")
    assert unit_cause(UNIT, gave_up, JOURNAL, before=gave_up) is not None


@pytest.mark.parametrize("state", [
    show(),                                                   # starting
    show(ActiveState="active", SubState="running"),
    show(ActiveState="inactive", SubState="dead"),            # a start job not run yet
    # etcd itself exited (its fatal line is the log's to say), systemd restarts it
    show(SubState="auto-restart", Result="exit-code", ExecMainCode="1", ExecMainStatus="1"),
    show(SubState="auto-restart", Result="signal", ExecMainCode="2", ExecMainStatus="9"),
    "",                                                       # systemctl said nothing
])
def test_a_unit_that_may_still_run_etcd_is_no_cause(state: str) -> None:
    assert unit_cause(UNIT, state, JOURNAL) is None


def test_the_runtime_asks_for_exactly_the_properties_it_reads() -> None:
    m = Member(ssh=SshTarget(host="10.0.0.1"), name="etcd-1", peer_url="https://10.0.0.1:2380",
               client_url="https://10.0.0.1:2379", data_dir="/var/lib/etcd",
               env_file="/etc/etcd.env", unit="kube-etcd.service")
    argv = Systemd().state_argv(m)
    assert argv == ["systemctl", "show", "-p", ",".join(UNIT_PROPERTIES), "kube-etcd.service"]
    cause = Systemd().state_cause(m, show(ActiveState="failed", Result="exit-code"),
                                  ["kube-etcd.service: Dependency failed for etcd."])
    assert cause is not None and cause.text.endswith("): Dependency failed for etcd.")


def test_a_wait_fails_at_once_with_the_units_cause() -> None:
    asked: list[list[str]] = []

    def unit(lines: list[str]) -> Cause | None:
        asked.append(lines)
        return unit_cause(UNIT, show(SubState="auto-restart", Result="exit-code",
                                     ExecMainCode="1", ExecMainStatus="203"), lines)

    t0 = time.monotonic()
    with pytest.raises(StepFailed) as exc:
        wait_watching(lambda: False, 60, "etcd-1 to lead alone", pid=lambda: None,
                      log=lambda: list(JOURNAL), host="etcd-1", unit=unit)
    assert time.monotonic() - t0 < 5
    assert str(exc.value).startswith("etcd-1: etcd did not start ")
    assert "Failed at step EXEC spawning /nonexistent/etcd" in str(exc.value)
    assert asked == [JOURNAL]


def test_a_unit_without_a_cause_leaves_the_wait_to_its_timeout() -> None:
    with pytest.raises(StepFailed) as exc:
        wait_watching(lambda: False, 1.5, "etcd-1 healthy", pid=lambda: None,
                      log=lambda: [], host="etcd-1", unit=lambda lines: None)
    assert str(exc.value).startswith("timed out after 2 s waiting for etcd-1 healthy")
