"""The checks: recorded readings in, checks out. Pure.

Thresholds, and whose advice each one is:

* etcd-diagnosis (vmware/etcd-diagnosis, ``report``, read at 8cdcbb6e unless said):
  membership from every endpoint by a serializable MemberList, the same everywhere
  (commands/report/plugins/membership/plugin.go, ``compareMembers``); endpoint status hard
  fields cluster ID, version, storage version, and soft fields revision, raft term, raft
  index, applied index, leader, retried 3 times 1 s apart while they differ
  (plugins/epstatus/plugin.go, ``compareHardInfo``, ``compareSoftInfo``, ``maxRetries = 3``);
  DB size >= 80 % of the quota, or free space larger than the space in use and over 1 GB
  (the same file, ``checkDBSize``; its quota defaults to 2 GiB,
  commands/report/command_report.go at 79308ca3, ``--etcd-storage-quota-bytes``; doctor
  reads the member's own ``--quota-backend-bytes``, whose default is etcd's
  ``DefaultQuotaBytes`` 2 GiB, server/storage/quota.go at v3.6.16); a serializable and a
  linearizable read of one key through every endpoint (plugins/read/plugin.go); p50-p99 of
  WAL fsync, backend commit, apply, range, peer round trip and RSS from /metrics
  (plugins/metrics/plugin.go at 068703ca). etcd-diagnosis reports the read latencies and the
  percentiles without a threshold; doctor judges them by etcd's own numbers below.
* etcd's own alerting rules (etcd-io/etcd contrib/mixin/alerts/alerts.libsonnet at 19a6baf2):
  ``etcdHighFsyncDurations`` p99 WAL fsync > 0.5 s warning, > 1 s critical;
  ``etcdHighCommitDurations`` p99 backend commit > 0.25 s warning;
  ``etcdMemberCommunicationSlow`` p99 peer round trip > 0.15 s warning;
  ``etcdDatabaseQuotaLowSpace`` DB size > 95 % of the quota critical. 1 s is also etcd's own
  "slow fdatasync" log line (``warnSyncDuration``, server/storage/wal/wal.go at v3.6.16).
* etcd's ``--warning-apply-duration`` (100 ms, ``DefaultWarningApplyDuration``,
  server/embed/config.go at v3.6.16): etcd logs an apply, and a read-only range request
  (server/etcdserver/v3_server.go, ``WarnOfExpensiveReadOnlyRangeRequest``), that takes
  longer as "took too long": doctor warns above it for the read latencies and the apply p99.
* Clocks: etcd's peer prober warns "prober found high clock drift" when a peer's clock is
  more than 1 s off (``s.ClockDiff() > time.Second``,
  server/etcdserver/api/rafthttp/probing_status.go at v3.5.35 and v3.6.16).
* Certificates: warn within 30 days of expiry, fail within 7 (or expired); the SANs must cover
  the member's advertised URLs (hostchecks.check_files).
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources

from .. import versions as ver
from ..hostchecks import CertInfo
from ..live import LiveStatus, MemberInfo
from . import metrics as mx
from .model import Check, CheckInfo, Status
from .readings import ClusterReadings, MemberReadings, Timed

OK, WARN, FAIL = Status.ok, Status.warn, Status.fail

DEFAULT_QUOTA = 2 * 1024**3          # etcd DefaultQuotaBytes
QUOTA_WARN = 0.80                    # etcd-diagnosis checkDBSize
QUOTA_FAIL = 0.95                    # etcd mixin etcdDatabaseQuotaLowSpace
FRAG_MIN_FREE = 1_000_000_000        # etcd-diagnosis checkDBSize: "about 1GB"
READ_WARN_S = 0.100                  # etcd --warning-apply-duration default
APPLY_WARN_S = 0.100                 # the same
FSYNC_WARN_S, FSYNC_FAIL_S = 0.5, 1.0   # etcd mixin etcdHighFsyncDurations
COMMIT_WARN_S = 0.25                 # etcd mixin etcdHighCommitDurations
RTT_WARN_S = 0.15                    # etcd mixin etcdMemberCommunicationSlow
CLOCK_WARN_S = 1.0                   # etcd rafthttp prober's clock drift warning
CERT_WARN = dt.timedelta(days=30)
CERT_FAIL = dt.timedelta(days=7)
SOFT_RETRIES = 3                     # etcd-diagnosis epstatus maxRetries
SOFT_RETRY_WAIT_S = 1.0              # etcd-diagnosis epstatus time.Sleep(time.Second)
# The storage version is the one hard field that differs for a while on a healthy etcd 3.6
# cluster: each member writes its own, from the cluster version, when it applies a change of
# that and at its monitor's tick (server/etcdserver/server.go at v3.6.16,
# monitorStorageVersion; version/monitor.go, UpdateStorageVersionIfNeeded), and the leader
# sets the cluster version at its own tick, to 3.0 while a peer does not answer yet
# (decideClusterVersion). The tick is monitorVersionInterval, 4 s (rafthttp's 5 s
# ConnWriteTimeout less 1 s). Until then a member reports "3.5.0" (a backend with no storage
# version, schema.UnsafeDetectSchemaVersion) or, before its first backend commit, none: seen
# for 1-4 s beside "3.6.0" right after a 3.6.16 cluster started with one member 3 s late.
# When only the storage version differs, the statuses are taken again, 1 s apart, for 6 s.
STORAGE_RETRIES = 7



def _catalogue() -> tuple[CheckInfo, ...]:
    """Every check, in the table's order, from checks.toml beside this file (a table of
    names and texts: data, not code)."""
    raw = tomllib.loads(resources.files(__package__).joinpath("checks.toml").read_text())
    return tuple(CheckInfo(c["name"], c["group"], c["about"], c["threshold"])
                 for c in raw["check"])


CHECKS = _catalogue()
CHECK_NAMES = tuple(c.name for c in CHECKS)


# ------------------------------------------------------------------------- formatting

def seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "+Inf" if s is not None else "-"
    if s < 1:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def _hex(i: int) -> str:
    return f"{i:x}"


# ------------------------------------------------------------------------- etcd-diagnosis

def _answered(m: MemberReadings) -> bool:
    return m.status is not None


def _reached_members(r: ClusterReadings) -> Iterator[MemberReadings]:
    """The members SSH reached, in the inventory's order: the ones the host checks look at
    (check_ssh reports the others)."""
    return (m for m in r.members if m.ssh is not None and m.ssh.ok)


def _names(r: ClusterReadings) -> dict[int, str]:
    out: dict[int, str] = {}
    for m in r.members:
        for x in m.members or ():
            if x.name:
                out.setdefault(x.id, x.name)
        if m.status is not None:
            out.setdefault(m.status.member_id, m.name)
    return out


def _member_key(ms: Sequence[MemberInfo]) -> tuple[tuple[object, ...], ...]:
    return tuple(sorted((x.id, x.name, tuple(sorted(x.peer_urls)), tuple(sorted(x.client_urls)),
                         x.is_learner) for x in ms))


def check_membership(r: ClusterReadings) -> list[Check]:
    lists = {m.name: m.members for m in r.members}
    missing = {m.name: (m.member_list_error or m.status_error or m.error
                        or (m.ssh.error if m.ssh else None) or "no answer")
               for m in r.members if m.members is None}
    got = {n: ms for n, ms in lists.items() if ms is not None}
    if not got:
        return [Check("membership", None, FAIL, "no list", "no member answered MemberList: "
                      + "; ".join(f"{n}: {w}" for n, w in missing.items()))]
    keys = {n: _member_key(ms) for n, ms in got.items()}
    first = next(iter(keys.values()))
    differ = [n for n, k in keys.items() if k != first]
    count = len(next(iter(got.values())))
    details = {"lists": {n: [{"id": _hex(x.id), "name": x.name, "peer_urls": list(x.peer_urls),
                              "is_learner": x.is_learner} for x in ms]
                         for n, ms in got.items()}}
    if differ:
        return [Check("membership", None, FAIL, "lists differ",
                      f"the member lists differ between {next(iter(keys))} and "
                      f"{', '.join(differ)}", value=float(count), unit="count", details=details)]
    if missing:
        return [Check("membership", None, FAIL, f"{len(got)} of {len(lists)} lists",
                      "no member list from " + "; ".join(f"{n} ({w})"
                                                         for n, w in missing.items()),
                      value=float(count), unit="count", details=details)]
    return [Check("membership", None, OK, f"{count} members, same on all",
                  value=float(count), unit="count", details=details)]


def check_endpoint_status(r: ClusterReadings) -> list[Check]:
    names = _names(r)
    out = []
    for m in r.members:
        st = m.status
        if st is None:
            why = m.status_error or m.error or (m.ssh.error if m.ssh and m.ssh.error else None)
            if m.etcd_running is False:
                why = "etcd is not running on the host"
            out.append(Check("endpoint-status", m.name, FAIL, "no answer",
                             f"etcd did not answer Status: {why or 'no answer'}"))
            continue
        leader = names.get(st.leader, _hex(st.leader)) if st.leader else None
        fig = f"rev {st.revision}, leader {leader or '-'}"
        det = {"member_id": _hex(st.member_id), "cluster_id": _hex(st.cluster_id),
               "version": st.version, "storage_version": st.storage_version or None,
               "revision": st.revision, "raft_term": st.raft_term, "raft_index": st.raft_index,
               "raft_applied_index": st.raft_applied_index,
               "leader": _hex(st.leader) if st.leader else None, "db_size": st.db_size,
               "db_size_in_use": st.db_size_in_use, "is_learner": st.is_learner,
               "errors": list(st.errors)}
        if st.errors:
            out.append(Check("endpoint-status", m.name, FAIL, fig,
                             "etcd reports errors: " + "; ".join(st.errors), details=det))
        elif not st.leader:
            out.append(Check("endpoint-status", m.name, FAIL, "no leader",
                             "the member knows no leader", details=det))
        else:
            out.append(Check("endpoint-status", m.name, OK, fig, details=det))
    return out


def _hard(s: LiveStatus) -> tuple[int, str, str]:
    return (s.cluster_id, s.version, s.storage_version)


def _soft(s: LiveStatus) -> tuple[int, int, int, int, int]:
    return (s.revision, s.raft_term, s.raft_index, s.raft_applied_index, s.leader)


def hard_mismatch(statuses: Mapping[str, LiveStatus]) -> list[str]:
    """Members whose cluster ID, version or storage version differ from the first's."""
    items = list(statuses.items())
    return [n for n, s in items[1:] if _hard(s) != _hard(items[0][1])] if items else []


def soft_mismatch(statuses: Mapping[str, LiveStatus]) -> list[str]:
    items = list(statuses.items())
    return [n for n, s in items[1:] if _soft(s) != _soft(items[0][1])] if items else []


def storage_only_mismatch(statuses: Mapping[str, LiveStatus]) -> bool:
    """The hard fields differ, in the storage version only (cluster IDs and versions agree)."""
    items = list(statuses.values())
    return bool(hard_mismatch(statuses)) and all(
        (s.cluster_id, s.version) == (items[0].cluster_id, items[0].version) for s in items)


def should_retry_status(rounds: Sequence[Mapping[str, LiveStatus]]) -> bool:
    """Take the statuses again? etcd-diagnosis' rule: while the soft fields differ, the hard
    ones agree and no member reported errors, at most 3 rounds in all. And while only the
    storage version differs (etcd 3.6 sets it a tick after the cluster version), at most
    ``STORAGE_RETRIES`` rounds."""
    if not rounds:
        return False
    last = rounds[-1]
    if any(s.errors for s in last.values()):
        return False
    if hard_mismatch(last):
        return storage_only_mismatch(last) and len(rounds) < STORAGE_RETRIES
    return bool(soft_mismatch(last)) and len(rounds) < SOFT_RETRIES


def check_status_fields(r: ClusterReadings) -> list[Check]:
    if not r.status_rounds or not r.status_rounds[-1]:
        return [Check("status-hard", None, FAIL, "no status", "no member answered Status"),
                Check("status-soft", None, FAIL, "no status", "no member answered Status")]
    last = r.status_rounds[-1]
    first = next(iter(last))
    out = []
    hard = hard_mismatch(last)
    if hard:
        s0 = last[first]
        diff = "; ".join(f"{n}: cluster {_hex(last[n].cluster_id)} version {last[n].version} "
                         f"storage {last[n].storage_version or '-'}" for n in hard)
        after = f" (after {len(r.status_rounds)} tries, {len(r.status_rounds) - 1} s)" \
            if len(r.status_rounds) > 1 and storage_only_mismatch(last) else ""
        out.append(Check("status-hard", None, FAIL, f"{len(hard)} differ",
                         f"{first}: cluster {_hex(s0.cluster_id)} version {s0.version} storage "
                         f"{s0.storage_version or '-'}; {diff}{after}"))
    else:
        s0 = last[first]
        out.append(Check("status-hard", None, OK,
                         f"v{s0.version}" + (f", storage {s0.storage_version}"
                                             if s0.storage_version else ""),
                         f"cluster {_hex(s0.cluster_id)} on {len(last)} members"))
    soft = soft_mismatch(last)
    tries = len(r.status_rounds)
    if soft:
        s0 = last[first]
        diff = "; ".join(f"{n}: rev {last[n].revision} term {last[n].raft_term} index "
                         f"{last[n].raft_index} applied {last[n].raft_applied_index}"
                         for n in soft)
        out.append(Check("status-soft", None, WARN, f"differ after {tries}",
                         f"{first}: rev {s0.revision} term {s0.raft_term} index "
                         f"{s0.raft_index} applied {s0.raft_applied_index}; {diff}",
                         value=float(tries), unit="count"))
    else:
        out.append(Check("status-soft", None, OK, f"equal (try {tries})",
                         value=float(tries), unit="count"))
    return out


def _quota(m: MemberReadings) -> int:
    raw = m.flags.get("quota-backend-bytes", "")
    try:
        q = int(raw)
    except ValueError:
        q = 0
    return q if q > 0 else DEFAULT_QUOTA


def check_db(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        st = m.status
        if st is None:
            for name in ("db-quota", "db-fragmentation"):
                out.append(Check(name, m.name, WARN, "not checked",
                                 "etcd did not answer Status"))
            continue
        quota = _quota(m)
        ratio = st.db_size / quota
        fig = f"{ratio * 100:.0f} % of {size(quota)}"
        msg = f"DB {size(st.db_size)} of the quota {size(quota)}"
        if ratio > QUOTA_FAIL:
            out.append(Check("db-quota", m.name, FAIL, fig, msg + ": writes stop at the quota "
                             "(NOSPACE); compact and defragment, or raise "
                             "--quota-backend-bytes", value=ratio, unit="ratio"))
        elif ratio >= QUOTA_WARN:
            out.append(Check("db-quota", m.name, WARN, fig, msg + ": compact and defragment, "
                             "or raise --quota-backend-bytes", value=ratio, unit="ratio"))
        else:
            out.append(Check("db-quota", m.name, OK, fig, value=ratio, unit="ratio"))
        free = st.db_size - st.db_size_in_use
        fig = f"{size(free)} free of {size(st.db_size)}"
        if free > st.db_size_in_use and free > FRAG_MIN_FREE:
            out.append(Check("db-fragmentation", m.name, WARN, fig,
                             "more free space than space in use, and over 1 GB: defragment "
                             "(etcdctl defrag, one member at a time)", value=float(free),
                             unit="bytes"))
        else:
            out.append(Check("db-fragmentation", m.name, OK, fig, value=float(free),
                             unit="bytes"))
    return out


def _read(name: str, m: MemberReadings, t: Timed | None) -> Check:
    if t is None:
        return Check(name, m.name, FAIL, "no read", m.status_error or m.error
                     or "etcd did not answer")
    if not t.ok:
        return Check(name, m.name, FAIL, "failed", f"the read failed: {t.error}",
                     value=t.seconds, unit="seconds")
    if t.seconds > READ_WARN_S:
        return Check(name, m.name, WARN, seconds(t.seconds), "slower than etcd's "
                     "--warning-apply-duration (100 ms)", value=t.seconds, unit="seconds")
    return Check(name, m.name, OK, seconds(t.seconds), value=t.seconds, unit="seconds")


def check_reads(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        out.append(_read("read-serializable", m, m.read_serializable))
        out.append(_read("read-linearizable", m, m.read_linearizable))
    return out


_METRICS: tuple[tuple[str, str, float | None, float | None, str], ...] = (
    # check, family, warn above (p99, seconds), fail above, why
    ("metric-wal-fsync", mx.WAL_FSYNC, FSYNC_WARN_S, FSYNC_FAIL_S,
     "etcd's alert etcdHighFsyncDurations: the disk is too slow for etcd"),
    ("metric-backend-commit", mx.BACKEND_COMMIT, COMMIT_WARN_S, None,
     "etcd's alert etcdHighCommitDurations: the disk is too slow for etcd"),
    ("metric-apply", mx.APPLY, APPLY_WARN_S, None,
     "etcd logs such applies as taking too long (--warning-apply-duration)"),
    ("metric-range", mx.RANGE, None, None, ""),
    ("metric-peer-rtt", mx.PEER_RTT, RTT_WARN_S, None,
     "etcd's alert etcdMemberCommunicationSlow: the network between members is slow"),
)


def check_metrics(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        if m.metrics is None:
            for name, *_ in _METRICS:
                out.append(Check(name, m.name, WARN, "not read",
                                 f"/metrics not read ({m.metrics_url or 'no URL'}): "
                                 f"{m.metrics_error or 'etcd does not answer'}"))
            out.append(Check("metric-rss", m.name, WARN, "not read",
                             m.metrics_error or "etcd does not answer"))
            continue
        for name, family, warn, fail, why in _METRICS:
            samples = mx.as_histograms(m.metrics, family)
            h = mx.worst(samples) if samples else None
            if h is None:
                out.append(Check(name, m.name, OK, "not exported",
                                 f"this etcd exports no {family}"))
                continue
            ps = h.percentiles()
            p99 = ps[99]
            fig = f"p50 {seconds(ps[50])} p90 {seconds(ps[90])} p99 {seconds(p99)}"
            det = {"family": family, "count": h.count, "labels": dict(h.labels),
                   "percentiles": {f"p{p}": mx.finite(v) for p, v in ps.items()}}
            val = mx.finite(p99)
            if fail is not None and p99 > fail:
                out.append(Check(name, m.name, FAIL, fig, f"p99 over {seconds(fail)}: {why}",
                                 value=val, unit="seconds", details=det))
            elif warn is not None and p99 > warn:
                out.append(Check(name, m.name, WARN, fig, f"p99 over {seconds(warn)}: {why}",
                                 value=val, unit="seconds", details=det))
            else:
                out.append(Check(name, m.name, OK, fig, value=val, unit="seconds",
                                 details=det))
        rss = m.metrics.get(mx.RSS)
        if isinstance(rss, float):
            out.append(Check("metric-rss", m.name, OK, size(rss), value=rss, unit="bytes"))
        else:
            out.append(Check("metric-rss", m.name, OK, "not exported"))
    return out


# ------------------------------------------------------------------------- SSH only

def check_ssh(r: ClusterReadings) -> list[Check]:
    out = []
    for m in r.members:
        if m.ssh is None or not m.ssh.ok:
            why = (m.ssh.error if m.ssh else None) or m.error or "not tried"
            out.append(Check("ssh", m.name, FAIL, "unreachable",
                             f"{why}; its other host checks were not run",
                             value=m.ssh.seconds if m.ssh else None, unit="seconds"))
        elif m.sudo is not None and not m.sudo.ok:
            out.append(Check("ssh", m.name, FAIL, "no root",
                             f"SSH works, commands as root do not: {m.sudo.error}",
                             value=m.ssh.seconds, unit="seconds"))
        else:
            fig = seconds(m.ssh.seconds) + (f" + root {seconds(m.sudo.seconds)}"
                                            if m.sudo else "")
            out.append(Check("ssh", m.name, OK, fig, value=m.ssh.seconds, unit="seconds"))
    return out


def _expiry(name: str, member: str | None, what: str, cert: CertInfo, now: dt.datetime
            ) -> Check:
    left = cert.not_after - now
    days = left.total_seconds() / 86400
    fig = f"{days:.0f} days" if days >= 1 or days <= 0 else f"{left.total_seconds() / 3600:.0f} h"
    det = {"not_after": cert.not_after.isoformat(), "subject": cert.subject}
    if left <= dt.timedelta(0):
        return Check(name, member, FAIL, "expired", f"{what} expired {cert.not_after:%Y-%m-%d}",
                     value=days, unit="days", details=det)
    if left < CERT_FAIL:
        return Check(name, member, FAIL, fig, f"{what} expires {cert.not_after:%Y-%m-%d} "
                     "(under 7 days): renew it now", value=days, unit="days", details=det)
    if left < CERT_WARN:
        return Check(name, member, WARN, fig, f"{what} expires {cert.not_after:%Y-%m-%d} "
                     "(under 30 days): renew it", value=days, unit="days", details=det)
    return Check(name, member, OK, fig, f"{what} until {cert.not_after:%Y-%m-%d}",
                 value=days, unit="days", details=det)


def check_certificates(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        if not m.flags:
            out.append(Check("certificates", m.name, WARN, "not checked",
                             "etcd's flags could not be read (no process, no config file)"))
            continue
        bad = [c for c in m.cert_checks if not c.ok]
        certs = {p: c for p, c in m.certs.items() if isinstance(c, CertInfo)}
        det = {"files": {p: ({"not_after": c.not_after.isoformat(), "subject": c.subject,
                              "dns": list(c.dns), "ips": list(c.ips)}
                             if isinstance(c, CertInfo) else {"error": c})
                         for p, c in sorted(m.certs.items())}}
        soonest = min(certs.items(), key=lambda pc: pc[1].not_after, default=None)
        if bad:
            out.append(Check("certificates", m.name, FAIL, f"{len(bad)} problem(s)",
                             "; ".join(c.message() for c in bad), details=det))
            continue
        if soonest is None:
            tls = any(k in m.flags for k in ("cert-file", "peer-cert-file"))
            out.append(Check("certificates", m.name, OK if not tls else WARN,
                             "no TLS" if not tls else "not read",
                             "etcd runs without TLS certificates" if not tls
                             else "no certificate could be read", details=det))
            continue
        path, cert = soonest
        c = _expiry("certificates", m.name, f"{path} ({len(certs)} certificates read)", cert,
                    r.now)
        out.append(Check(c.name, c.member, c.status, f"{c.figure} ({path.rsplit('/', 1)[-1]})",
                         c.message, c.value, c.unit, {**c.details, **det}))
    if isinstance(r.client_cert, CertInfo):
        out.append(_expiry("client-certificate", None,
                           f"the client certificate {r.client_cert_path}", r.client_cert, r.now))
    elif isinstance(r.client_cert, str):
        out.append(Check("client-certificate", None, FAIL, "unreadable",
                         f"{r.client_cert_path}: {r.client_cert}"))
    return out


# A known bug that matters to a recovery: issue, what it does, and where it is fixed.
_BUGS: tuple[tuple[str, str, Callable[[ver.Version], bool], Mapping[tuple[int, int], int | None]],
             ...] = (
    ("etcd-io/etcd#20009", "panics on --force-new-cluster with a reused data dir",
     lambda v: ver.panics_on_force_new_cluster(v), {(3, 6): 1}),
    ("etcd-io/etcd#20055", "force-new-cluster keeps only entries up to the WAL's commit "
     "(align-commit works around it)", lambda v: not ver.commit_fix(v), ver.COMMIT_FIX),
    ("etcd-io/etcd#20893", "learners can stay in membership after force-new-cluster",
     lambda v: not _fixed(v, ver.LEARNER_FIX), ver.LEARNER_FIX),
    ("etcd-io/etcd#20793", "a promoted member can come back as a learner after a restart",
     lambda v: not _fixed(v, ver.PROMOTE_FIX), ver.PROMOTE_FIX),
)


def _fixed(v: ver.Version, fixes: Mapping[tuple[int, int], int | None]) -> bool:
    line = (v[0], v[1])
    if line in fixes:
        patch = fixes[line]
        return patch is not None and v[2] >= patch
    return line > max(fixes)


def advisories_for(version: str | None) -> list[tuple[str, str, str | None]]:
    """(issue, text, the release of the member's own line that fixes it, or None) for every
    known bug this version has."""
    v = ver.parse_version(version)
    if v is None:
        return []
    out = []
    for issue, text, has, fixes in _BUGS:
        if v[:2] == (3, 6) and issue == "etcd-io/etcd#20009" and v != (3, 6, 0):
            continue
        if has(v):
            patch = fixes.get((v[0], v[1]))
            out.append((issue, text, f"{v[0]}.{v[1]}.{patch}" if patch is not None else None))
    return out


def check_versions(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        version = m.status.version if m.status else m.version
        if not version:
            out.append(Check("versions", m.name, OK, "unknown",
                             "the running version could not be read"))
            continue
        found = advisories_for(version)
        fixable = [(i, t, f) for i, t, f in found if f]
        target = max((f for _, _, f in fixable), key=lambda f: ver.parse_version(f) or (0, 0, 0),
                     default=None)
        det = {"version": version, "advisories": [{"issue": i, "text": t, "fixed_in": f}
                                                 for i, t, f in found]}
        lines = "; ".join(f"{t} ({i}" + (f", fixed in {f})" if f else ", no fix in this "
                                         "line)") for i, t, f in found)
        if fixable:
            out.append(Check("versions", m.name, WARN, f"{version}: move to {target}",
                             lines, value=float(len(fixable)), unit="count", details=det))
        else:
            out.append(Check("versions", m.name, OK, version, lines,
                             value=0.0, unit="count", details=det))
    return out


def check_disk(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        if m.free_bytes is None or m.data_size is None:
            out.append(Check("disk-space", m.name, WARN, "not read",
                             "free space or the data dir's size could not be read"))
        else:
            fig = f"{size(m.free_bytes)} free, data {size(m.data_size)}"
            det = {"free_bytes": m.free_bytes, "data_bytes": m.data_size, "path": m.free_path}
            if m.free_bytes < m.data_size:
                out.append(Check("disk-space", m.name, FAIL, fig,
                                 f"{m.free_path}: less free space than the data dir holds: "
                                 "a recovery refuses to start (no room for the backup)",
                                 value=float(m.free_bytes), unit="bytes", details=det))
            elif m.free_bytes < 2 * m.data_size:
                out.append(Check("disk-space", m.name, WARN, fig,
                                 f"{m.free_path}: under twice the data dir's size: room for "
                                 "the backup, not for a re-added member's fresh copy beside "
                                 "its moved-aside data", value=float(m.free_bytes),
                                 unit="bytes", details=det))
            else:
                out.append(Check("disk-space", m.name, OK, fig, value=float(m.free_bytes),
                                 unit="bytes", details=det))
        roots = [what for what, mount in (("data dir", m.data_mount), ("WAL dir", m.wal_mount))
                 if mount == "/"]
        if m.data_mount is None:
            out.append(Check("data-dir-fs", m.name, WARN, "not read",
                             "the data dir's mount point could not be read"))
        elif roots:
            out.append(Check("data-dir-fs", m.name, WARN, "on /",
                             f"the {' and the '.join(roots)} {'are' if len(roots) > 1 else 'is'}"
                             " on the root filesystem: a full "
                             "root fills etcd's disk too (NOSPACE), and other writers slow its "
                             "fsyncs; give it a filesystem of its own"))
        else:
            out.append(Check("data-dir-fs", m.name, OK, m.data_mount
                             + (f", WAL {m.wal_mount}" if m.wal_mount else "")))
    return out


def check_clock(r: ClusterReadings) -> list[Check]:
    got = [(m.name, m.clock_offset_s, m.clock_uncertainty_s or 0.0) for m in r.members
           if m.clock_offset_s is not None]
    if len(got) < 2:
        return [Check("clock-skew", None, OK if len(r.members) < 2 else WARN,
                      "not compared", "fewer than two hosts' clocks were read")]
    hi = max(got, key=lambda g: g[1] or 0.0)
    lo = min(got, key=lambda g: g[1] or 0.0)
    skew = (hi[1] or 0.0) - (lo[1] or 0.0)
    unc = hi[2] + lo[2]
    fig = f"{seconds(skew)} (±{seconds(unc)})"
    det = {"offsets_s": {n: round(o or 0.0, 4) for n, o, _ in got}}
    if skew - unc > CLOCK_WARN_S:
        return [Check("clock-skew", None, WARN, fig,
                      f"{hi[0]}'s clock is {seconds(skew)} ahead of {lo[0]}'s: over etcd's "
                      "1 s (\"prober found high clock drift\"); fix time sync (NTP) on the "
                      "hosts", value=skew, unit="seconds", details=det)]
    return [Check("clock-skew", None, OK, fig, value=skew, unit="seconds", details=det)]


def _membership(r: ClusterReadings) -> tuple[MemberInfo, ...] | None:
    """The member list of the first member that gave one, a leader's first."""
    with_leader = [m for m in r.members if m.members is not None and m.status is not None
                   and m.status.leader == m.status.member_id]
    for m in with_leader + list(r.members):
        if m.members is not None:
            return m.members
    return None


def _status_by_id(r: ClusterReadings) -> dict[int, LiveStatus]:
    return {m.status.member_id: m.status for m in r.members if m.status is not None}


def check_hygiene(r: ClusterReadings) -> list[Check]:
    out = []
    ms = _membership(r)
    if ms is None:
        return [Check("learners", None, WARN, "not checked", "no member list was read"),
                Check("inventory", None, WARN, "not checked", "no member list was read")]
    statuses = _status_by_id(r)
    leader = next((s for s in statuses.values() if s.leader == s.member_id), None)
    learners = [x for x in ms if x.is_learner]
    if learners:
        parts = []
        for x in learners:
            s = statuses.get(x.id)
            behind = (f", applied {s.raft_applied_index} of the leader's "
                      f"{leader.raft_applied_index}" if s and leader else "")
            parts.append(f"{x.name or _hex(x.id)} (ID {_hex(x.id)}{behind})")
        out.append(Check("learners", None, WARN, f"{len(learners)} learner(s)",
                         "not promoted: " + ", ".join(parts) + ". Promote it once caught up "
                         "(etcdctl member promote ID) or remove it: a learner does not vote, "
                         "and etcd allows one at a time", value=float(len(learners)),
                         unit="count"))
    else:
        out.append(Check("learners", None, OK, "none", value=0.0, unit="count"))
    inv_by_name = {m.name: m for m in r.inventory}
    inv_by_url = {m.peer_url: m for m in r.inventory}
    problems = []
    seen: set[str] = set()
    for x in ms:
        name = x.name
        if name in inv_by_name:
            seen.add(name)
            inv = inv_by_name[name]
            if inv.peer_url not in x.peer_urls:
                problems.append(f"{name}: peer URL {', '.join(x.peer_urls)} in the membership, "
                                f"{inv.peer_url} in the inventory")
            continue
        other = next((inv_by_url[u] for u in x.peer_urls if u in inv_by_url), None)
        if other is not None:
            seen.add(other.name)
            problems.append(f"the member at {other.peer_url} is named {name or '(unstarted)'} "
                            f"in the membership, {other.name} in the inventory (renamed?)")
        else:
            problems.append(f"{name or _hex(x.id)} ({', '.join(x.peer_urls)}) is a member the "
                            "inventory does not know")
    for m in r.inventory:
        if m.name not in seen:
            problems.append(f"{m.name} ({m.peer_url}) is in the inventory, not in the "
                            "membership")
    if problems:
        out.append(Check("inventory", None, FAIL, f"{len(problems)} difference(s)",
                         "; ".join(problems) + ". Fix the inventory (etcd-recovery inventory "
                         "discover writes one from the hosts): a recovery refuses an inventory "
                         "that does not describe the cluster", value=float(len(problems)),
                         unit="count"))
    else:
        out.append(Check("inventory", None, OK, f"{len(ms)} members match",
                         value=0.0, unit="count"))
    return out


def check_inventory_config(r: ClusterReadings) -> list[Check]:
    """The inventory against each reached host, field by field (crosscheck's checks, read as
    inspect reads them)."""
    out = []
    for m in _reached_members(r):
        if m.sudo is None or not m.sudo.ok:
            continue
        bad = [c for c in m.config_checks if not c.ok]
        if not m.config_checks:
            out.append(Check("inventory-config", m.name, WARN, "not read",
                             "neither the configuration file nor a running etcd was read"))
        elif bad:
            out.append(Check(
                "inventory-config", m.name, FAIL, f"{len(bad)} field(s) differ",
                "; ".join(f"{c.field} is {c.inventory!r} in the inventory but "
                          f"{c.host!r} in {c.source}" for c in bad)
                + ". Fix the inventory (etcd-recovery inventory discover writes it from the "
                  "hosts), or the host if the inventory is right: a recovery refuses a member "
                  "whose inventory does not match its host",
                value=float(len(bad)), unit="count",
                details={"differences": [c.to_json() for c in bad]}))
        else:
            sources = sorted({c.source for c in m.config_checks})
            out.append(Check("inventory-config", m.name, OK,
                             f"{len(m.config_checks)} fields match", "read from "
                             + " and ".join(sources), value=0.0, unit="count"))
    return out


def check_alarms(r: ClusterReadings) -> list[Check]:
    names = _names(r)
    read = [m for m in r.members if m.alarms is not None]
    if not read:
        why = next((m.alarms_error for m in r.members if m.alarms_error), None)
        return [Check("alarms", None, WARN, "not read",
                      f"no member answered the alarm list{': ' + why if why else ''}")]
    alarms = sorted({(a.alarm, names.get(a.member_id, _hex(a.member_id)))
                     for m in read for a in m.alarms or ()})
    if alarms:
        fix = {"NOSPACE": "free space (compact, defragment, or raise the quota), then "
                          "etcdctl alarm disarm",
               "CORRUPT": "the member's data differs from the others': replace it "
                          "(remove it, move its data aside, add it back)"}
        text = "; ".join(f"{a} on {who}" + (f": {fix[a]}" if a in fix else "")
                         for a, who in alarms)
        return [Check("alarms", None, FAIL, ", ".join(sorted({a for a, _ in alarms})), text,
                      value=float(len(alarms)), unit="count",
                      details={"alarms": [{"alarm": a, "member": w} for a, w in alarms]})]
    return [Check("alarms", None, OK, "none", value=0.0, unit="count")]


def _timed(name: str, m: MemberReadings, t: Timed | None, what: str) -> Check:
    if t is None:
        return Check(name, m.name, WARN, "not run", f"{what}: not run")
    if not t.ok:
        return Check(name, m.name, FAIL, "failed", f"{what}: {t.error}", value=t.seconds,
                     unit="seconds")
    return Check(name, m.name, OK, seconds(t.seconds) + (f", {t.detail}" if t.detail else ""),
                 value=t.seconds, unit="seconds")


def check_rehearsal(r: ClusterReadings) -> list[Check]:
    out = []
    for m in _reached_members(r):
        out.append(_timed("rehearse-data-dir", m, m.data_dir_readable,
                          "the data dir, read as root"))
        if m.etcd_running:
            out.append(_timed("rehearse-disk-reader", m, m.disk_reader,
                              "inspect's WAL reader, in place while etcd runs"))
        else:
            out.append(_timed("rehearse-disk-reader", m, m.disk_reader,
                              "inspect's WAL reader, in place"))
    if r.plan is not None:
        if r.plan.ok:
            out.append(Check("rehearse-plan", None, OK, f"{seconds(r.plan.seconds)}, "
                             f"{r.plan.detail}", value=r.plan.seconds, unit="seconds"))
        else:
            out.append(Check("rehearse-plan", None, FAIL, "no plan",
                             f"plan --allow-quorum: {r.plan.error}", value=r.plan.seconds,
                             unit="seconds"))
    return out


_ALL: tuple[Callable[[ClusterReadings], list[Check]], ...] = (
    check_membership, check_endpoint_status, check_status_fields, check_db, check_reads,
    check_metrics, check_ssh, check_certificates, check_versions, check_disk, check_clock,
    check_hygiene, check_inventory_config, check_alarms, check_rehearsal)


def run_checks(r: ClusterReadings, names: Sequence[str] = ()) -> tuple[Check, ...]:
    """Every check over the readings (only those named, when names are given), in the order
    of CHECKS, each check's rows in inventory order."""
    rows = [c for fn in _ALL for c in fn(r)]
    if names:
        rows = [c for c in rows if c.name in names]
    order = {n: i for i, n in enumerate(CHECK_NAMES)}
    members = {m.name: i for i, m in enumerate(r.members)}
    return tuple(sorted(rows, key=lambda c: (order.get(c.name, 99),
                                             -1 if c.member is None else
                                             members.get(c.member, 99))))
