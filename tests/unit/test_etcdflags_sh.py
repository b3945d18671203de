"""The runbook's bash reading of a running etcd (etcdflags_sh) gives etcdflags' answers: the
data dir and "runs with --force-new-cluster" of generated command lines and environments, and
the member's own etcd among several processes. Run in real bash; the last test runs real
processes named etcd and reads them through the runbook's own dump over a local `on`."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_recovery import etcdflags, etcdflags_sh, processes
from etcd_recovery.runbook import environment

from .test_plan_actions import inventory as pa_inventory
from .test_plan_actions import plan_for

BASH = shutil.which("bash") or "/bin/bash"

# Path segments without a newline: bash's command substitution drops trailing newlines, and a
# data dir holds none in practice.
SEGMENT = st.sampled_from(["", ".", "..", "var", "lib", "etcd", "a b", "-n", "x*"])
PATH = st.builds(lambda lead, parts: lead + "/".join(parts),
                 st.sampled_from(["", "/", "//", "///"]), st.lists(SEGMENT, max_size=5))
VALUE = st.one_of(PATH, st.sampled_from(["true", "false", "1", "0", "t", "F", "TRUE", "yes",
                                         "", "=", "--x", "-"]))
FLAG = st.sampled_from(["--force-new-cluster", "-force-new-cluster", "--data-dir",
                        "-data-dir", "--config-file", "--name", "--enable-v2", "-h",
                        "--strict-reconfig-check", "--listen-peer-urls", "--", "-", "---x",
                        "--=x", "plain", "-force-new-cluster "])
TOKEN = st.one_of(FLAG, VALUE, st.builds(lambda f, v: f"{f}={v}", FLAG, VALUE))
ARGV = st.lists(TOKEN, max_size=8).map(lambda a: ["etcd", *a])
ENV_KEY = st.sampled_from(["ETCD_FORCE_NEW_CLUSTER", "ETCD_DATA_DIR", "ETCD_CONFIG_FILE",
                           "ETCD_data_dir", "ETCD_Force_New_Cluster", "ETCD_UNSUPPORTED_ARCH",
                           "ETCD_", "PATH", "ETCD_NAME"])
ENV = st.dictionaries(ENV_KEY, VALUE, max_size=4)


def b64_argv(argv: list[str]) -> str:
    return base64.b64encode(b"\0".join(a.encode() for a in argv) + b"\0").decode()


def b64_env(env: dict[str, str]) -> str:
    return base64.b64encode(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
                            ).decode()


def force_word(argv: list[str], env: dict[str, str]) -> str:
    force = etcdflags.runs_with_force_new_cluster(argv or ["etcd"], env)
    return {True: "true", False: "false", None: "unknown"}[force]


def bash(script: str, stdin: str = "") -> str:
    proc = subprocess.run([BASH, "-c", etcdflags_sh.FUNCTIONS + "\n" + script],
                          input=stdin, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=ARGV, env=ENV)
def test_bash_reads_flags_as_etcdflags_does(argv: list[str], env: dict[str, str]) -> None:
    out = bash(f'etcd_flags "{b64_argv(argv)}" "{b64_env(env)}"')
    dd, force = out.rstrip("\n").split("\t")
    assert (dd or None, force) == (etcdflags.data_dir(argv, env), force_word(argv, env)), \
        (argv, env)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(procs=st.dictionaries(st.integers(1, 99999), st.tuples(ARGV, ENV), max_size=3),
       want=st.sampled_from(["/var/lib/etcd", "/var/lib/etcd/", "//var/lib/etcd",
                             "/var/lib/../lib/etcd"]))
def test_the_members_own_etcd_is_the_one_etcdflags_picks(
        procs: dict[int, tuple[list[str], dict[str, str]]], want: str) -> None:
    dump = "".join(f"{pid}\n{b64_argv(a)}\n{b64_env(e)}\n" for pid, (a, e) in procs.items())
    assert processes.parse_dump(dump) == procs       # the dump is what etcd_dump prints
    pid = processes.own_pid(procs, want)
    expected = "" if pid is None else f"{pid} {force_word(*procs[pid])}\n"
    assert bash(f'etcd_of "{want}"', dump) == expected, (procs, want)


def test_norm_path_is_posixpaths() -> None:
    import posixpath
    cases = ["/", "//", "///", "/a//b/", "a/../..", "../x", "/../x", "//a/./b/..", ".", "-n",
             "a b/../c"]
    out = bash("".join(f"norm_path '{c}'\n" for c in cases)).splitlines()
    assert out == [posixpath.normpath(c) for c in cases]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_the_runbook_predicates_read_real_processes(tmp_path: Path) -> None:
    """Two real processes named etcd (a copy of bash, kept alive), one the member's (its data
    dir, with --force-new-cluster=false: not the flag), one another member's with the flag;
    the runbook header's own functions, with `on` running the host's command locally."""
    fake = tmp_path / "etcd"
    shutil.copy(BASH, fake)
    mine, other = tmp_path / "main", tmp_path / "events"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    started = [subprocess.Popen([str(fake), "-c", "sleep 30; :", "--data-dir", str(d), flag],
                                env=env)
               for d, flag in ((mine, "--force-new-cluster=false"),
                               (other, "--force-new-cluster"))]
    try:
        for p in started:   # until /proc shows the argv (exec has happened)
            deadline = time.monotonic() + 10
            while b"--data-dir" not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        fakes = (f'on() {{ shift; sh -c "$*"; }}\n'
                 f'data_dir_of() {{ case $1 in main) echo {mine}/ ;; events) echo {other} ;; '
                 f'gone) echo {tmp_path}/gone ;; esac; }}\n')
        out = bash(fakes + "own_etcd main; own_etcd events; own_etcd gone; "
                   "runs_without_force main && echo main-ok; "
                   "runs_without_force events || echo events-forced; "
                   "etcd_running main && echo running; etcd_stopped gone && echo stopped")
        assert out.split("\n") == [f"{started[0].pid} false", f"{started[1].pid} true",
                                   "main-ok", "events-forced", "running", "stopped", ""]
    finally:
        for p in started:
            p.kill()
            p.wait()


def test_the_runbook_header_defines_them_with_each_members_data_dir() -> None:
    inv = pa_inventory("systemd")
    plan = plan_for("systemd")
    lines = "\n".join(environment(plan, inv))
    assert etcdflags_sh.FUNCTIONS in lines
    for m in inv.members:
        assert f"    {m.name}) echo {m.data_dir} ;;" in lines
    assert "pgrep -x etcd | head" not in lines and "grep -q -e --force-new-cluster" not in lines


@pytest.mark.parametrize("member_id", ["340f8e1abe7c9d3", "8e9e05c52164694d", "1"])
def test_the_runbooks_add_learner_reads_etcdctls_padded_member_id(member_id: str) -> None:
    """etcdctl prints ``Member %16x added``: an ID of fewer than 16 hex digits comes padded
    with spaces (etcdctl/ctlv3/command/printer_simple.go, MemberAdd; as the lab's 3.6.16
    etcdctl printed it)."""
    from etcd_recovery.runbook import _PREDICATES

    fake = ('etcdctl() { printf "Member %16s added to cluster %16s\\n\\nETCD_NAME=x\\n" '
            f'{member_id} b97dccc8a717c945; }}\n')
    out = bash(_PREDICATES + "\n" + fake + "add_learner --endpoints=x n https://h:2380")
    assert out == f"{member_id}\n"
