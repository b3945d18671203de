"""The line that says why etcd exited, found in what real etcd builds print when they cannot
start: a peer address not on the host, a port another process holds, a data dir that cannot
be a directory, an --initial-cluster that does not name the member. Each build runs on
loopback and exits by itself within seconds."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from etcd_recovery.etcdlog import fatal_cause, stall_cause

from .conftest import ROLES, etcd_bin_dir, free_port


def start_fails(role: str, tmp_path: Path, **flags: str) -> list[str]:
    peer, client = free_port(), free_port()
    args = {"name": "m1", "data-dir": str(tmp_path / "data"),
            "listen-peer-urls": f"http://127.0.0.1:{peer}",
            "initial-advertise-peer-urls": f"http://127.0.0.1:{peer}",
            "initial-cluster": f"m1=http://127.0.0.1:{peer}",
            "listen-client-urls": f"http://127.0.0.1:{client}",
            "advertise-client-urls": f"http://127.0.0.1:{client}", **flags}
    proc = subprocess.run([str(etcd_bin_dir(role) / "etcd"),
                           *(f"--{k}={v}" for k, v in args.items())],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, proc.stderr[-2000:]
    return proc.stderr.splitlines()


@pytest.mark.parametrize("role", ROLES)
def test_the_fatal_line_of_each_cause(role: str, tmp_path: Path) -> None:
    gone = "203.0.113.1"  # TEST-NET-3: on no host here
    lines = start_fails(role, tmp_path / "a", **{
        "listen-peer-urls": f"http://{gone}:2380",
        "initial-advertise-peer-urls": f"http://{gone}:2380",
        "initial-cluster": f"m1=http://{gone}:2380"})
    cause = fatal_cause(lines)
    assert cause is not None and cause.fatal, lines[-5:]
    assert f"listen tcp {gone}:2380: bind: cannot assign requested address" in cause.text

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        lines = start_fails(role, tmp_path / "b", **{
            "listen-client-urls": f"http://127.0.0.1:{port}",
            "advertise-client-urls": f"http://127.0.0.1:{port}"})
    cause = fatal_cause(lines)
    assert cause is not None and "address already in use" in cause.text, lines[-5:]

    blocker = tmp_path / "file"
    blocker.write_text("")
    cause = fatal_cause(start_fails(role, tmp_path / "c", **{"data-dir": str(blocker / "d")}))
    # 3.4: "error listing data dir: PATH"; 3.5+: "...: not a directory"
    assert cause is not None and ("not a directory" in cause.text or
                                  f"error listing data dir: {blocker / 'd'}" in cause.text), cause

    cause = fatal_cause(start_fails(role, tmp_path / "d", **{
        "initial-cluster": "other=http://127.0.0.1:1"}))
    assert cause is not None and 'couldn\'t find local name "m1"' in cause.text, cause


def test_prefixes_and_the_last_attempt() -> None:
    first = ('Dec 03 16:49:10 etcd-1 etcd[812]: {"level":"fatal","msg":"discovery failed",'
             '"error":"listen tcp 10.0.0.1:2380: bind: cannot assign requested address"}')
    second = ('2026-12-03T16:49:12.1Z stderr F {"level":"panic","msg":"failed to delete member '
              'from store","error":"member not found"}')
    runtime_panic = "panic: failed to delete member from store"
    cause = fatal_cause([first, '{"level":"info","msg":"starting"}', second, runtime_panic,
                         "goroutine 1 [running]:"])
    assert cause is not None
    assert cause.text == "failed to delete member from store: member not found"
    assert cause.line.startswith('{"level":"panic"')
    bare = fatal_cause(["something", "panic: runtime error: index out of range [3]"])
    assert bare is not None and bare.text == "panic: runtime error: index out of range [3]"
    assert fatal_cause(['{"level":"warn","msg":"slow fdatasync"}', "not json {"]) is None
    stall = stall_cause(['{"level":"warn","msg":"prober detected unhealthy status",'
                         '"remote-peer-id":"8e9e05c52164694d","address":"https://10.0.0.2:2380"}'])
    assert stall is not None and not stall.fatal
    assert stall.text == "prober detected unhealthy status (https://10.0.0.2:2380)"
