"""doctor's pure core on recorded readings: each condition gives its check, status and exit
code; the percentiles are etcd-diagnosis'; the outputs hold no secret."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etcd_recovery import cli
from etcd_recovery.doctor import metrics as mx
from etcd_recovery.doctor import output
from etcd_recovery.doctor.checks import (
    CHECK_NAMES,
    CHECKS,
    STORAGE_RETRIES,
    advisories_for,
    run_checks,
    should_retry_status,
)
from etcd_recovery.doctor.gather import metrics_url, parse_host_script
from etcd_recovery.doctor.model import SCHEMA, Check, Report, Status
from etcd_recovery.doctor.readings import (
    ClusterReadings,
    InventoryMember,
    MemberReadings,
    Timed,
)
from etcd_recovery.doctor.run import check_names
from etcd_recovery.errors import EXIT_USAGE, UsageError
from etcd_recovery.hostchecks import CertInfo, HostCheck
from etcd_recovery.live import AlarmInfo, LiveStatus, MemberInfo
from etcd_recovery.model import Check as ModelCheck

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "doctor"
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
IDS = {"etcd-1": 0x11, "etcd-2": 0x22, "etcd-3": 0x33}
PEER = {n: f"https://10.0.0.{i}:2380" for i, n in enumerate(IDS, start=1)}
METRICS_TEXT = (FIXTURES / "metrics-3.6.16.txt").read_text()


def status(name: str, **kw: object) -> LiveStatus:
    base = dict(member_id=IDS[name], cluster_id=0xC1, raft_term=2, raft_index=100,
                raft_applied_index=100, leader=IDS["etcd-1"], db_size=40_000_000,
                db_size_in_use=30_000_000, version="3.6.16", errors=(), is_learner=False,
                revision=50, storage_version="3.6.0")
    base.update(kw)
    return LiveStatus(**base)  # type: ignore[arg-type]


def members_list(learner: str | None = None, rename: dict[str, str] | None = None
                 ) -> tuple[MemberInfo, ...]:
    rename = rename or {}
    return tuple(MemberInfo(i, rename.get(n, n), (PEER[n],), (f"https://10.0.0.{k}:2379",),
                            n == learner) for k, (n, i) in enumerate(IDS.items(), start=1))


def cert(days: float) -> CertInfo:
    return CertInfo(NOW + dt.timedelta(days=days), ("etcd",), ("10.0.0.1",), "CN=etcd")


def member(name: str, **kw: Any) -> MemberReadings:
    base = MemberReadings(
        name=name, host=f"h-{name}", ssh=Timed(0.05), sudo=Timed(0.01), etcd_running=True,
        flags={"data-dir": "/var/lib/etcd", "cert-file": "/pki/server.crt",
               "peer-cert-file": "/pki/peer.crt"},
        flags_source="process", status=status(name), members=members_list(),
        alarms=(), read_serializable=Timed(0.002), read_linearizable=Timed(0.004),
        metrics=mx.parse(METRICS_TEXT), metrics_url="http://127.0.0.1:2381",
        clock_offset_s=0.001, clock_uncertainty_s=0.002, data_size=100 << 20,
        free_bytes=50 << 30, free_path="/var/lib", data_mount="/var/lib/etcd",
        certs={"/pki/server.crt": cert(300), "/pki/peer.crt": cert(200)},
        cert_checks=(HostCheck(name, "certificate", "--cert-file /pki/server.crt", True,
                               "valid"),),
        version="3.6.16", data_dir_readable=Timed(0.003),
        disk_reader=Timed(0.004, detail="last index 100"),
        config_checks=tuple(ModelCheck(name, f, "x", "x", src, True)
                            for src in ("/etc/kubernetes/manifests/etcd.yaml",
                                        "the running etcd's command line")
                            for f in ("name", "data_dir", "peer_url", "client_url")))
    return replace(base, **kw)


def cluster(*ms: MemberReadings, **kw: Any) -> ClusterReadings:
    ms = ms or tuple(member(n) for n in IDS)
    rounds = ({m.name: m.status for m in ms if m.status is not None},)
    base = ClusterReadings(cluster="c1", inventory=tuple(InventoryMember(n, PEER[n])
                                                         for n in IDS),
                           members=ms, now=NOW, status_rounds=rounds,
                           client_cert=cert(100), client_cert_path="/op/client.crt",
                           plan=Timed(0.9, detail="22 steps, keep etcd-1"))
    return replace(base, **kw)


def report(r: ClusterReadings, names: tuple[str, ...] = ()) -> Report:
    return Report("c1", run_checks(r, names), 1.0, 1_700_000_000.0)


def rows(rep: Report, name: str) -> list[Check]:
    return [c for c in rep.checks if c.name == name]


def one(rep: Report, name: str, who: str | None = None) -> Check:
    found = [c for c in rows(rep, name) if c.member == who]
    assert len(found) == 1, (name, who, rep.checks)
    return found[0]


def not_ok(rep: Report) -> list[tuple[str, str | None, str]]:
    return [(c.name, c.member, c.status.value) for c in rep.checks if c.status is not Status.ok]


# ------------------------------------------------------------------ healthy


def test_healthy_readings_give_every_check_ok_and_exit_0() -> None:
    rep = report(cluster())
    assert not_ok(rep) == []
    assert rep.exit_code == 0
    assert {c.name for c in rep.checks} == set(CHECK_NAMES)
    # one row per member for the per-member checks, one for the cluster-wide ones
    assert [c.member for c in rows(rep, "endpoint-status")] == list(IDS)
    assert [c.member for c in rows(rep, "alarms")] == [None]


def test_every_check_is_described_with_a_threshold() -> None:
    assert len(set(CHECK_NAMES)) == len(CHECKS)
    assert all(c.about and c.threshold and c.group in ("etcd-diagnosis", "ssh")
               for c in CHECKS)


# ------------------------------------------------------------------ conditions


@pytest.mark.parametrize(("days", "want"), [(20, Status.warn), (3, Status.fail),
                                            (-1, Status.fail), (31, Status.ok)])
def test_a_certificate_expiring_soon_warns_at_30_days_and_fails_at_7(days: float,
                                                                     want: Status) -> None:
    m2 = member("etcd-2", certs={"/pki/server.crt": cert(300), "/pki/peer.crt": cert(days)})
    rep = report(cluster(member("etcd-1"), m2, member("etcd-3")))
    c = one(rep, "certificates", "etcd-2")
    assert c.status is want
    assert "peer.crt" in c.figure
    assert one(rep, "certificates", "etcd-1").status is Status.ok
    assert rep.exit_code == {Status.ok: 0, Status.warn: 1, Status.fail: 3}[want]


def test_a_certificate_whose_sans_do_not_cover_the_url_fails() -> None:
    bad = HostCheck("etcd-3", "certificate", "--peer-cert-file /pki/peer.crt", False,
                    "its names (etcd) do not cover 10.0.0.3", "issue a certificate")
    rep = report(cluster(member("etcd-1"), member("etcd-2"),
                         member("etcd-3", cert_checks=(bad,))))
    c = one(rep, "certificates", "etcd-3")
    assert c.status is Status.fail and "do not cover 10.0.0.3" in c.message


def test_the_client_certificate_is_judged_too() -> None:
    rep = report(cluster(client_cert=cert(5)))
    assert one(rep, "client-certificate").status is Status.fail
    assert rep.exit_code == 3


def test_a_member_down_fails_its_status_and_reads_and_the_membership() -> None:
    down = member("etcd-2", etcd_running=False, status=None, members=None, alarms=None,
                  read_serializable=None, read_linearizable=None, metrics=None,
                  metrics_error="etcd is not running",
                  status_error="etcd is not running on the host")
    rep = report(cluster(member("etcd-1"), down, member("etcd-3")))
    assert one(rep, "endpoint-status", "etcd-2").status is Status.fail
    assert "not running" in one(rep, "endpoint-status", "etcd-2").message
    assert one(rep, "read-linearizable", "etcd-2").status is Status.fail
    assert one(rep, "membership").status is Status.fail
    assert one(rep, "metric-wal-fsync", "etcd-2").status is Status.warn
    assert one(rep, "ssh", "etcd-2").status is Status.ok
    assert rep.exit_code == 3


def test_an_unreachable_host_is_one_ssh_failure_not_a_row_per_host_check() -> None:
    gone = MemberReadings(name="etcd-3", host="h-etcd-3",
                          ssh=Timed(1.0, "host h-etcd-3:22: timed out after 1 s"))
    rep = report(cluster(member("etcd-1"), member("etcd-2"), gone))
    assert one(rep, "ssh", "etcd-3").status is Status.fail
    assert "timed out after 1 s" in one(rep, "ssh", "etcd-3").message
    assert one(rep, "endpoint-status", "etcd-3").status is Status.fail
    for name in ("certificates", "disk-space", "versions", "rehearse-data-dir", "db-quota"):
        assert [c.member for c in rows(rep, name)] == ["etcd-1", "etcd-2"], name


def test_sudo_that_does_not_work_fails_ssh() -> None:
    rep = report(cluster(member("etcd-1", sudo=Timed(0.01, "sudo: a password is required")),
                         member("etcd-2"), member("etcd-3")))
    c = one(rep, "ssh", "etcd-1")
    assert c.status is Status.fail and "password is required" in c.message


def test_a_learner_left_unpromoted_warns_with_how_far_behind() -> None:
    ms = members_list(learner="etcd-3")
    learner = member("etcd-3", members=ms, status=status("etcd-3", is_learner=True,
                                                         raft_applied_index=90))
    rep = report(cluster(member("etcd-1", members=ms), member("etcd-2", members=ms), learner))
    c = one(rep, "learners")
    assert c.status is Status.warn and c.value == 1
    assert "etcd-3" in c.message and "applied 90 of the leader's 100" in c.message
    assert rep.exit_code == 1


@pytest.mark.parametrize("alarm", ["NOSPACE", "CORRUPT"])
def test_an_alarm_fails_naming_the_member(alarm: str) -> None:
    raised = (AlarmInfo(IDS["etcd-2"], alarm),)
    rep = report(cluster(*(member(n, alarms=raised) for n in IDS)))
    c = one(rep, "alarms")
    assert c.status is Status.fail and c.figure == alarm and f"{alarm} on etcd-2" in c.message
    assert rep.exit_code == 3


def test_alarms_not_readable_without_a_leader_warn() -> None:
    rep = report(cluster(*(member(n, alarms=None, alarms_error="no leader") for n in IDS)))
    assert one(rep, "alarms").status is Status.warn


def test_a_renamed_member_is_an_inventory_that_drifted() -> None:
    ms = members_list(rename={"etcd-3": "etcd-9"})
    rep = report(cluster(*(member(n, members=ms) for n in IDS)))
    c = one(rep, "inventory")
    assert c.status is Status.fail and "renamed" in c.message
    assert "etcd-9" in c.message and "etcd-3" in c.message
    assert rep.exit_code == 3


def test_members_unknown_to_the_inventory_and_the_other_way_round() -> None:
    ms = (*members_list()[:2], MemberInfo(0x44, "etcd-4", ("https://10.0.0.4:2380",), (),
                                          False))
    rep = report(cluster(*(member(n, members=ms) for n in IDS)))
    c = one(rep, "inventory")
    assert c.status is Status.fail
    assert "etcd-4 (https://10.0.0.4:2380) is a member the inventory does not know" in c.message
    assert "etcd-3 (https://10.0.0.3:2380) is in the inventory, not in the membership" \
        in c.message


def test_member_lists_that_differ_fail_membership() -> None:
    other = members_list(learner="etcd-2")
    rep = report(cluster(member("etcd-1"), member("etcd-2", members=other), member("etcd-3")))
    assert one(rep, "membership").status is Status.fail
    assert "etcd-2" in one(rep, "membership").message


@pytest.mark.parametrize(("db", "want"), [(0.5, Status.ok), (0.8, Status.warn),
                                          (0.9, Status.warn), (0.96, Status.fail)])
def test_db_size_against_the_quota(db: float, want: Status) -> None:
    quota = 1_000_000_000
    m1 = member("etcd-1", flags={"quota-backend-bytes": str(quota)},
                status=status("etcd-1", db_size=int(db * quota), db_size_in_use=int(db * quota)))
    rep = report(cluster(m1, member("etcd-2"), member("etcd-3")))
    c = one(rep, "db-quota", "etcd-1")
    assert c.status is want and c.value == pytest.approx(db)
    # without the flag, etcd's default quota of 2 GiB
    assert "of 2.0 GiB" in one(rep, "db-quota", "etcd-2").figure


@pytest.mark.parametrize(("size", "in_use", "want"), [
    (3_000_000_000, 1_000_000_000, Status.warn),   # 2 GB free > 1 GB in use, > 1 GB
    (1_500_000_000, 400_000_000, Status.warn),
    (900_000_000, 100_000_000, Status.ok),         # free > in use but under 1 GB
    (3_000_000_000, 1_600_000_000, Status.ok),     # free over 1 GB but < in use
])
def test_fragmentation_as_etcd_diagnosis_judges_it(size: int, in_use: int,
                                                    want: Status) -> None:
    m1 = member("etcd-1", flags={"quota-backend-bytes": str(8 << 30)},
                status=status("etcd-1", db_size=size, db_size_in_use=in_use))
    rep = report(cluster(m1, member("etcd-2"), member("etcd-3")))
    assert one(rep, "db-fragmentation", "etcd-1").status is want


def test_soft_fields_retried_then_warned_hard_fields_fail_at_once() -> None:
    a = {n: status(n) for n in IDS}
    b = {**a, "etcd-3": status("etcd-3", revision=51)}
    assert should_retry_status([b]) and should_retry_status([b, b])
    assert not should_retry_status([b, b, b])  # 3 rounds in all
    assert not should_retry_status([a])
    hard = {**b, "etcd-2": status("etcd-2", version="3.5.35")}
    assert not should_retry_status([hard])     # hard fields differ: no retry
    rep = report(cluster(status_rounds=(b, b, b)))
    assert one(rep, "status-soft").status is Status.warn
    assert one(rep, "status-soft").figure == "differ after 3"
    rep = report(cluster(status_rounds=(b, a)))
    assert one(rep, "status-soft").status is Status.ok
    rep = report(cluster(status_rounds=(hard,)))
    assert one(rep, "status-hard").status is Status.fail
    assert "3.5.35" in one(rep, "status-hard").message


def test_a_storage_version_a_tick_behind_is_taken_again_before_it_fails() -> None:
    """etcd 3.6 writes a member's storage version a monitor tick (4 s) after the cluster
    version: right after a start, "3.5.0" (or none) beside "3.6.0" is no fault yet."""
    a = {n: status(n) for n in IDS}
    for behind in ("3.5.0", ""):
        b = {**a, "etcd-2": status("etcd-2", storage_version=behind)}
        rounds = [b]
        while should_retry_status(rounds):
            rounds.append(b)
        assert len(rounds) == STORAGE_RETRIES == 7   # 6 s at 1 s apart: past one tick
        rep = report(cluster(status_rounds=tuple(rounds)))
        hard = one(rep, "status-hard")
        assert hard.status is Status.fail and "after 7 tries" in hard.message, hard.message
        settled = report(cluster(status_rounds=(b, b, a)))
        assert one(settled, "status-hard").status is Status.ok
    # a version or cluster ID that differs is no transient: it fails at once, storage or not
    for other in (status("etcd-2", version="3.5.35", storage_version="3.5.0"),
                  status("etcd-2", cluster_id=0xC2, storage_version="3.5.0")):
        assert not should_retry_status([{**a, "etcd-2": other}])
    # a member reporting errors is not waited for either
    assert not should_retry_status([{**a, "etcd-2": status("etcd-2", storage_version="",
                                                           errors=("CORRUPT",))}])


def test_status_errors_and_no_leader_fail_endpoint_status() -> None:
    rep = report(cluster(member("etcd-1", status=status("etcd-1", errors=("NOSPACE",))),
                         member("etcd-2", status=status("etcd-2", leader=0)),
                         member("etcd-3")))
    assert one(rep, "endpoint-status", "etcd-1").status is Status.fail
    assert one(rep, "endpoint-status", "etcd-2").figure == "no leader"


def test_read_latency_warns_over_etcds_100_ms_and_a_failed_read_fails() -> None:
    rep = report(cluster(member("etcd-1", read_linearizable=Timed(0.25)),
                         member("etcd-2", read_serializable=Timed(2.0, "DEADLINE_EXCEEDED")),
                         member("etcd-3")))
    assert one(rep, "read-linearizable", "etcd-1").status is Status.warn
    assert one(rep, "read-serializable", "etcd-2").status is Status.fail


def _fsync(p99_bucket: float) -> str:
    """A WAL fsync histogram with 100 observations: 98 under 1 ms, 2 in the bucket."""
    return (f'etcd_disk_wal_fsync_duration_seconds_bucket{{le="0.001"}} 98\n'
            f'etcd_disk_wal_fsync_duration_seconds_bucket{{le="{p99_bucket}"}} 100\n'
            f'etcd_disk_wal_fsync_duration_seconds_bucket{{le="+Inf"}} 100\n'
            'etcd_disk_wal_fsync_duration_seconds_sum 1\n'
            'etcd_disk_wal_fsync_duration_seconds_count 100\n')


@pytest.mark.parametrize(("bucket", "want"), [(0.256, Status.ok), (1.024, Status.warn),
                                              (4.096, Status.fail)])
def test_wal_fsync_p99_against_etcds_alerts(bucket: float, want: Status) -> None:
    m1 = member("etcd-1", metrics=mx.parse(_fsync(bucket)))
    rep = report(cluster(m1, member("etcd-2"), member("etcd-3")))
    assert one(rep, "metric-wal-fsync", "etcd-1").status is want
    # a family this etcd does not export (3.5 has no range histogram) is said, not failed
    assert one(rep, "metric-range", "etcd-1").figure == "not exported"


def test_clock_skew_over_etcds_one_second_warns() -> None:
    rep = report(cluster(member("etcd-1", clock_offset_s=0.0),
                         member("etcd-2", clock_offset_s=1.6),
                         member("etcd-3", clock_offset_s=0.1)))
    c = one(rep, "clock-skew")
    assert c.status is Status.warn and "etcd-2" in c.message and "etcd-1" in c.message
    assert c.value == pytest.approx(1.6)
    # within the reading's uncertainty: not said
    rep = report(cluster(member("etcd-1", clock_offset_s=0.0, clock_uncertainty_s=0.3),
                         member("etcd-2", clock_offset_s=1.2, clock_uncertainty_s=0.3),
                         member("etcd-3")))
    assert one(rep, "clock-skew").status is Status.ok


@pytest.mark.parametrize(("free", "want"), [(50 << 20, Status.fail), (150 << 20, Status.warn),
                                            (250 << 20, Status.ok)])
def test_disk_space_for_the_backups(free: int, want: Status) -> None:
    rep = report(cluster(member("etcd-1", free_bytes=free), member("etcd-2"),
                         member("etcd-3")))
    assert one(rep, "disk-space", "etcd-1").status is want


def test_a_data_dir_or_wal_dir_on_the_root_filesystem_warns() -> None:
    rep = report(cluster(member("etcd-1", data_mount="/"),
                         member("etcd-2", wal_mount="/"), member("etcd-3")))
    assert one(rep, "data-dir-fs", "etcd-1").status is Status.warn
    assert "WAL dir" in one(rep, "data-dir-fs", "etcd-2").message
    assert one(rep, "data-dir-fs", "etcd-3").status is Status.ok


@pytest.mark.parametrize(("version", "figure", "status_"), [
    ("3.6.0", "3.6.0: move to 3.6.6", Status.warn),
    ("3.5.16", "3.5.16: move to 3.5.25", Status.warn),
    ("3.5.35", "3.5.35", Status.ok),
    ("3.6.16", "3.6.16", Status.ok),   # #20793 has no 3.6 fix: said, not warned
])
def test_version_advisories_name_the_release_to_move_to(version: str, figure: str,
                                                        status_: Status) -> None:
    rep = report(cluster(member("etcd-1", status=status("etcd-1", version=version)),
                         member("etcd-2"), member("etcd-3")))
    c = one(rep, "versions", "etcd-1")
    assert (c.figure, c.status) == (figure, status_)
    if version == "3.6.0":
        assert "etcd-io/etcd#20009" in c.message and "fixed in 3.6.1" in c.message


def test_advisories_for_versions() -> None:
    assert [i for i, _, _ in advisories_for("3.6.16")] == ["etcd-io/etcd#20793"]
    assert advisories_for("3.5.35") == []
    assert advisories_for(None) == [] and advisories_for("garbage") == []


def test_the_rehearsal_failing_fails() -> None:
    rep = report(cluster(member("etcd-1", disk_reader=Timed(0.1, "no WAL files in /x")),
                         member("etcd-2", data_dir_readable=Timed(0.1, "permission denied")),
                         member("etcd-3"), plan=Timed(1.0, "refused: cluster IDs differ")))
    assert one(rep, "rehearse-disk-reader", "etcd-1").status is Status.fail
    assert one(rep, "rehearse-data-dir", "etcd-2").status is Status.fail
    assert "cluster IDs differ" in one(rep, "rehearse-plan").message


def test_check_selects_a_subset_and_an_unknown_name_is_a_usage_error() -> None:
    rep = report(cluster(), names=("alarms", "ssh"))
    assert {c.name for c in rep.checks} == {"alarms", "ssh"}
    assert check_names(["ssh", "ssh", "alarms"]) == ("ssh", "alarms")
    with pytest.raises(UsageError, match="--check nope: no such check"):
        check_names(["nope"])


def test_cli_refuses_an_unknown_check_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("cluster: {name: c1, runtime: systemd}\nmembers:\n"
                   "  - {name: etcd-1, ssh: {host: 127.0.0.1}, peer_url: "
                   "'https://127.0.0.1:2380', client_url: 'https://127.0.0.1:2379'}\n")
    res = CliRunner().invoke(cli.app, ["doctor", "-i", str(inv), "--check", "nope"])
    assert res.exit_code == EXIT_USAGE, res.output
    assert "no such check" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli.app, ["doctor", "-i", str(tmp_path / "missing.yaml")])
    assert res.exit_code == EXIT_USAGE and "Traceback" not in res.output


# ------------------------------------------------------------------ metrics


def test_percentiles_are_etcd_diagnosis_interpolation() -> None:
    h = mx.Histogram((), ((0.001, 50), (0.002, 90), (0.004, 100), (float("inf"), 100)), 100,
                     0.1)
    # p50: rank 50 reached in the first bucket: 0 + 50/50 * 0.001
    assert h.percentile(50) == pytest.approx(0.001)
    # p90: rank 90 in the second: 0.001 + (90-50)/40 * 0.001
    assert h.percentile(90) == pytest.approx(0.002)
    # p95: rank 95 in the third: 0.002 + (95-90)/10 * 0.002
    assert h.percentile(95) == pytest.approx(0.003)
    assert mx.Histogram((), (), 0, 0.0).percentile(99) == 0.0
    tail = mx.Histogram((), ((0.001, 1), (float("inf"), 10)), 10, 1.0)
    assert tail.percentile(99) == float("inf")


def test_recorded_metrics_of_a_real_member_parse() -> None:
    found = mx.parse(METRICS_TEXT)
    assert set(found) == set(mx.FAMILIES)
    rtt = mx.as_histograms(found, mx.PEER_RTT)
    assert rtt is not None and len(rtt) == 2           # one per peer ("To" label)
    assert all(dict(h.labels).get("To") for h in rtt)
    fsync = mx.as_histograms(found, mx.WAL_FSYNC)
    assert fsync is not None and fsync[0].count > 0
    assert 0 < fsync[0].percentile(99) < 1
    rss = found[mx.RSS]
    assert isinstance(rss, float) and rss > 1 << 20
    assert mx.parse("garbage\n{}\nx_bucket{le=\"a\"} 1\n") == {}


def test_host_script_output_and_metrics_url() -> None:
    out = parse_host_script("## pids\n42\n## free\n/var/lib\n1000\n## size\n500\n"
                            "## mount\n/\n## walmount\n")
    assert out["pids"] == ["42"] and out["free"] == ["/var/lib", "1000"]
    assert metrics_url({"listen-metrics-urls": "http://127.0.0.1:2381,http://x:1",
                        "advertise-client-urls": "https://a:2379"}) == "http://127.0.0.1:2381"
    assert metrics_url({"advertise-client-urls": "https://a:2379"}) == "https://a:2379"
    assert metrics_url({}) == ""


# ------------------------------------------------------------------ outputs


def test_json_has_a_stable_schema() -> None:
    rep = report(cluster(member("etcd-1", alarms=(AlarmInfo(IDS["etcd-1"], "NOSPACE"),)),
                         member("etcd-2"), member("etcd-3")))
    data = json.loads(json.dumps(rep.to_json()))
    assert set(data) == {"schema", "cluster", "status", "exit_code", "counts", "started_at",
                         "elapsed_s", "timings_s", "checks"}
    assert data["schema"] == SCHEMA and data["status"] == "fail" and data["exit_code"] == 3
    assert set(data["counts"]) == {"ok", "warn", "fail"}
    for c in data["checks"]:
        assert set(c) == {"check", "member", "status", "figure", "message", "value", "unit",
                          "details"}
        assert c["status"] in ("ok", "warn", "fail") and c["check"] in CHECK_NAMES


_LINE = re.compile(r'^[a-z_]+\{([a-z_]+="(?:[^"\\]|\\.)*")(,[a-z_]+="(?:[^"\\]|\\.)*")*\} '
                   r'(-?[0-9.e+-]+|\+Inf|NaN)$')


def test_prometheus_textfile_format() -> None:
    rep = report(cluster(*(member(n, alarms=(AlarmInfo(IDS["etcd-2"], "NOSPACE"),))
                           for n in IDS)))
    rep = replace(rep, cluster='we"ird\\name')
    text = output.prometheus(rep)
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) etcd_recovery_doctor_[a-z_]+ .+$", line), line
        else:
            assert _LINE.match(line), line
    assert 'check="alarms",member=""} 2' in text
    assert 'cluster="we\\"ird\\\\name"' in text
    assert 'etcd_recovery_doctor_exit_code{cluster="we\\"ird\\\\name"} 3\n' in text
    assert text.count("# TYPE etcd_recovery_doctor_check_status gauge") == 1
    # a sample per check row, one value per figure given
    assert text.count("etcd_recovery_doctor_check_status{") == len(rep.checks)


def test_the_table_fits_100_columns_and_says_what_is_not_ok() -> None:
    from rich.console import Console

    ms = members_list(learner="etcd-3")
    rep = report(cluster(*(member(n, members=ms) for n in IDS)))
    console = Console(width=100, record=True, color_system=None)
    output.table(rep, console)
    text = console.export_text()
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "warn: learners: not promoted: etcd-3" in text
    assert "exit 1" in text


def test_an_inventory_field_that_differs_from_the_host_fails_naming_both_values() -> None:
    moved = ModelCheck("etcd-2", "data_dir", "/var/lib/etcd", "/data/etcd",
                       "the running etcd's command line", False)
    m2 = member("etcd-2", config_checks=(*member("etcd-2").config_checks, moved))
    rep = report(cluster(member("etcd-1"), m2, member("etcd-3")))
    c = one(rep, "inventory-config", "etcd-2")
    assert c.status is Status.fail and c.figure == "1 field(s) differ"
    assert "data_dir is '/var/lib/etcd' in the inventory but '/data/etcd' in the running " \
           "etcd's command line" in c.message
    assert c.details["differences"][0]["host"] == "/data/etcd"
    assert one(rep, "inventory-config", "etcd-1").status is Status.ok
    assert rep.exit_code == 3
    # nothing read from the host: said, not passed over
    m3 = member("etcd-3", config_checks=())
    assert one(report(cluster(member("etcd-1"), member("etcd-2"), m3)),
               "inventory-config", "etcd-3").status is Status.warn
