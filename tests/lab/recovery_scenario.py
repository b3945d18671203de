"""The recovery itself on a real lab: lose quorum, plan, execute --confirm, verify, count keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from typing import Any

from etcd_recovery.errors import EXIT_DRY_RUN
from etcd_recovery.lab.lab import KEY_PREFIX

from .conftest import CLI, LabHandle, cli, etcdctl, etcdctl_txn
from .verbs import healthy, wait_for

AFTER = "/after/"


def key_count(lab: LabHandle, prefix: str, endpoint: str) -> int:
    res = etcdctl(lab.dir, f"get {prefix} --prefix --keys-only -w json", endpoint)
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout).get("count", 0))


def leader_of(lab: LabHandle, name: str) -> int:
    """The leader ``name`` believes in (0: none), from its own Status, which needs no quorum."""
    res = etcdctl(lab.dir, "endpoint status -w json", lab.client_url(name))
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout)[0]["Status"].get("leader", 0))


def lose_quorum(lab: LabHandle, newest: str, stale: str, gone: list[str],
                writes: int = 100) -> None:
    """``stale`` is cut off while the others take ``writes`` more keys; then the hosts in
    ``gone`` disappear and etcd on ``newest`` crashes; ``stale`` comes back, alone."""
    cli("lab", "partition", stale, "--dir", str(lab.dir))
    wait_for(lambda: healthy(lab, newest), 20, f"{newest} healthy without {stale}")
    for n in range(0, writes, 100):
        res = etcdctl_txn(lab.dir, [(f"{AFTER}{i:05d}", f"v{i}")
                                    for i in range(n, min(writes, n + 100))],
                          endpoint=lab.client_url(newest))
        assert "SUCCESS" in res.stdout, res.stderr
    for name in gone:
        cli("lab", "kill-host", name, "--dir", str(lab.dir))
    cli("lab", "stop-etcd", newest, "--dir", str(lab.dir))
    # A leader that has lost its quorum steps down only at its next quorum check (up to two
    # election timeouts later); healed before that, it hands the stale member the writes (a
    # 5-member CI run saw etcd-5 tie at the newest index). Heal once no member left running
    # believes in a leader.
    running = [h.name for h in lab.state.hosts if h.name not in (*gone, newest, stale)]
    wait_for(lambda: not any(leader_of(lab, name) for name in running), 30,
             f"{', '.join(running)} without a leader")
    cli("lab", "heal", stale, "--dir", str(lab.dir))
    status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json",
                            check=False).stdout)
    assert status["quorum"] is False


def inventory(lab: LabHandle) -> str:
    return str(lab.dir / "inventory.yaml")


def check_recovered(lab: LabHandle, survivors: list[str], keys: int, writes: int) -> None:
    res = cli("verify", "-i", inventory(lab), "-o", "json", check=False)
    report = json.loads(res.stdout)
    # verify checks the members that are reachable; the lost hosts are named, not hidden.
    assert report["ok"], report
    for name in survivors:
        url = lab.client_url(name)
        assert key_count(lab, KEY_PREFIX, url) == keys, name
        assert key_count(lab, AFTER, url) == writes, name
    members = json.loads(etcdctl(lab.dir, "member list -w json",
                                 lab.client_url(survivors[0])).stdout)["members"]
    assert sorted(m["name"] for m in members) == sorted(survivors)
    assert not any(m.get("isLearner") for m in members)


def execute(lab: LabHandle, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli("execute", "-i", inventory(lab), "--confirm", "-o", "json", *extra, check=check,
               timeout=600)


def journal_events(lab: LabHandle) -> list[dict[str, Any]]:
    d = lab.dir / ".etcd-recovery"
    events: list[dict[str, Any]] = []
    for p in sorted(d.glob("*.journal.jsonl")):
        for line in p.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def execute_until(lab: LabHandle, event: str, step: str, *extra: str,
                  timeout: float = 300) -> None:
    """Start `execute --confirm`, SIGKILL it as soon as the journal shows ``event`` for
    ``step`` (an event this run wrote: earlier runs' events in the journal do not count)."""
    before = len(journal_events(lab))
    # stderr to a file, not a pipe: execute writes the plan and its progress there (72 KB for
    # a snapshot plan on static pods), and a pipe nobody reads holds it at 64 KB
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([CLI, "execute", "-i", inventory(lab), "--confirm", *extra],
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if any(e["event"] == event and e["step"] == step
                   for e in journal_events(lab)[before:]):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                err.seek(0)
                raise AssertionError(f"execute ended (rc {proc.returncode}) before {event} "
                                     f"{step}: {err.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.02)
        err.seek(0)
        raise AssertionError(f"no {event} {step} within {timeout} s: "
                             f"{err.read().decode(errors='replace')[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()


def assert_journal_matches_plan(lab: LabHandle, run_id: str) -> None:
    """Every action the journal says ran is an action of the plan, field for field (a named
    reference counts as its resolved value); and every planned action is accounted for."""
    d = lab.dir / ".etcd-recovery"
    plan = json.loads((d / f"{run_id}.plan.json").read_text())
    planned = {(s["id"], n): a for s in plan["steps"] for n, a in enumerate(s["actions"], 1)}
    events = [e for e in journal_events(lab) if e.get("run") == run_id]
    seen = set()
    for e in events:
        if e["event"] not in ("action-start", "action-skipped"):
            continue
        key = (e["step"], e["detail"]["action"])
        assert key in planned, f"journal action {key} is not in the plan"
        seen.add(key)
        if e["event"] == "action-skipped":
            continue
        a, got = planned[key], e["detail"]
        assert got["kind"] == a["kind"], (key, got, a)
        for field in ("host", "argv", "path", "digest", "mode", "call", "peer_url",
                      "member_id", "member_ref", "condition", "file", "offset", "record_hex"):
            if field in got:
                assert got[field] == a[field], (key, field, got[field], a[field])
    assert seen == set(planned), f"planned but never journaled: {set(planned) - seen}"
    refs = {e["detail"]["name"] for e in events if e["event"] == "ref-resolved"}
    wanted = {a["result"] for a in planned.values() if a["kind"] == "etcd" and a["result"]}
    assert wanted <= refs, f"references never resolved: {wanted - refs}"


def run_recovery(lab: LabHandle, members: int, keys: int) -> dict[str, Any]:
    if members == 3:
        newest, stale, gone = "etcd-1", "etcd-3", ["etcd-2"]
    else:
        newest, stale, gone = "etcd-1", "etcd-5", ["etcd-2", "etcd-3"]
    writes = 150
    lose_quorum(lab, newest, stale, gone, writes)
    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json").stdout)
    # The stale member never got the writes (the lab's partition lets nothing through until
    # heal, and a stopped etcd stays down): the newest member is chosen. With 3 members it
    # alone holds them, no tie; with 5, etcd-4 took them too (the writes' quorum was etcd-1 to
    # etcd-4), so a tie may name it, broken by name, and never the stale member.
    reason = plan["reason"]
    tied = set(reason[len("tie: "):].split(" have ")[0].split(", ")) \
        if reason.startswith("tie:") else set()
    assert tied <= ({newest, "etcd-4"} if members == 5 else set()), reason
    # a tie is broken by commit index, then by name: etcd-4 may have learnt the later commit
    assert plan["chosen"] == newest or plan["chosen"] in tied, reason
    assert plan["chosen"] != stale, reason
    assert plan["unreachable"] == gone
    # The kept member's version decides the align-commit advisory (etcd-io/etcd#20055).
    kept_version = lab.state.version_of(lab.state.host(plan["chosen"]))
    # etcd's own fix landed in 3.5.22 and 3.6.1 (and every 3.7); 3.4 never got it.
    v = tuple(int(x) for x in kept_version.split("."))
    fixed = (3, 5, 22) <= v < (3, 6, 0) or v >= (3, 6, 1)
    commit_lines = [a for a in plan["advisories"] if "#20055" in a]
    assert len(commit_lines) == 1 and commit_lines[0].startswith(
        f"{plan['chosen']} (etcd {kept_version}): "), plan["advisories"]
    assert ("itself raises the commit" in commit_lines[0]) is fixed, commit_lines
    md = cli("plan", "-i", inventory(lab), "-o", "markdown").stdout
    assert "--force-new-cluster" in md and "## " in md
    # Without --confirm: shows the plan, exits 4 (a dry run), changes nothing.
    dry = cli("execute", "-i", inventory(lab), check=False)
    assert dry.returncode == EXIT_DRY_RUN
    assert not (lab.dir / ".etcd-recovery" / "current").exists()
    res = execute(lab)
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    assert_journal_matches_plan(lab, summary["run_id"])
    survivors = [f"etcd-{i}" for i in range(1, members + 1) if f"etcd-{i}" not in gone]
    check_recovered(lab, survivors, keys, writes)
    assert set(summary["rejoin_later"]) == set(gone)
    assert all("etcd-recovery rejoin" in c for c in summary["rejoin_later"].values())
    return dict(summary)




def host_command(lab: LabHandle, name: str) -> tuple[str, str, str] | None:
    """The guarded command that holds ``name``'s command lock now, as (pid, run, step) (the
    plan's own probe, run in the host's container), or None."""
    from etcd_recovery.plan.scripts import probe_argv

    code, out = lab.lab.exec(lab.state.host(name), probe_argv(), check=False)
    assert code == 0, out
    words = out.split()
    if words[:1] != ["busy"]:
        return None
    # (in the moment between the guard taking the lock and writing its line, the line is
    # missing or still the command before's: as Session.command_holder, "?" for what is not
    # there yet)
    pid, run, step = (*words[1:4], "?", "?", "?")[:3]
    return pid, run, step


def wait_host_command(lab: LabHandle, name: str, step: str,
                      proc: subprocess.Popen[bytes] | None = None,
                      timeout: float = 300) -> tuple[str, str, str]:
    """Wait until ``step``'s command runs on ``name`` (it holds the host's command lock),
    while ``proc`` still runs; return (pid, run, step)."""
    deadline = time.monotonic() + timeout
    while True:
        holder = host_command(lab, name)
        if holder is not None and holder[2] == step:
            return holder
        assert proc is None or proc.poll() is None, f"execute ended before {step} ran"
        assert time.monotonic() < deadline, f"{step} never ran on {name} within {timeout} s"
        time.sleep(0.02)


def load_values(lab: LabHandle, via: str, megabytes: int, prefix: str = "/big/") -> int:
    """Put about ``megabytes`` MB of 160 KiB values through ``via``; returns how many keys."""
    from etcd_recovery.live import EtcdClient

    pki = lab.dir / "pki"
    value = b"v" * (160 * 1024)     # eight per transaction: under etcd's 1.5 MiB request limit
    count = megabytes * 1024 * 1024 // len(value)
    tls = dict(ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
               key_file=str(pki / "client.key"))
    with EtcdClient(f"{lab.ip(via)}:2379", timeout=60.0, **tls) as client:
        revision = client.put_many(((f"{prefix}{n:06d}", value) for n in range(count)),
                                   batch=8)

    def caught_up() -> bool:   # every member has applied it: none lags behind a snapshot
        for h in lab.state.hosts:
            with EtcdClient(f"{h.mgmt_ip}:2379", timeout=5.0, **tls) as c:
                if c.status().revision < revision:
                    return False
        return True

    wait_for(caught_up, 120, f"every member at revision {revision}")
    return count
