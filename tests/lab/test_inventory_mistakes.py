"""A hurried inventory meets real hosts: every mistake gives one clear message and its
documented exit code, never a traceback, and changes nothing on any host."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .conftest import LabHandle, cli, ssh

HOST_STATE = ("md5sum /etc/etcd/etcd.env; ls -la /var/lib/etcd-recovery 2>&1 | grep -v total; "
              "pgrep -x etcd | wc -l; systemctl is-enabled etcd.service; "
              "ls /var/lib/etcd/member")

Mutation = Callable[[dict[str, Any], Path], Any]


def member(inv: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in inv["members"] if m["name"] == name)


def setm(name: str, key: str, value: Any) -> Mutation:
    def f(inv: dict[str, Any], _: Path) -> None:
        member(inv, name)[key] = value
    return f


def setssh(name: str, key: str, value: Any) -> Mutation:
    def f(inv: dict[str, Any], _: Path) -> None:
        member(inv, name).setdefault("ssh", {})[key] = value
    return f


def swap_names(inv: dict[str, Any], _: Path) -> None:
    a, b = member(inv, "etcd-1"), member(inv, "etcd-2")
    a["name"], b["name"] = "etcd-2", "etcd-1"


def wrong_runtime(inv: dict[str, Any], _: Path) -> None:
    inv["cluster"]["runtime"] = "static-pod"
    for m in inv["members"]:
        m.pop("env_file", None)
        m.pop("unit", None)


def listed_twice(inv: dict[str, Any], _: Path) -> None:
    inv["members"].append(copy.deepcopy(inv["members"][0]))


def empty_known_hosts(inv: dict[str, Any], d: Path) -> None:
    (d / "empty_known_hosts").write_text("")
    for m in inv["members"]:
        m.setdefault("ssh", {})["known_hosts"] = str(d / "empty_known_hosts")


def ops_without_sudo(inv: dict[str, Any], _: Path) -> None:
    for m in inv["members"]:
        m.setdefault("ssh", {})["user"] = "ops"
        m["ssh"]["sudo"] = False


def text(value: str) -> Mutation:
    def f(inv: dict[str, Any], _: Path) -> str:
        return value
    return f


def unknown_top(inv: dict[str, Any], _: Path) -> None:
    inv["clusterr"] = {}


def missing_ca(inv: dict[str, Any], d: Path) -> None:
    inv.setdefault("tls", {})["ca"] = str(d / "no-such-ca.crt")


def auth_without_file(inv: dict[str, Any], d: Path) -> None:
    inv["auth"] = {"user": "root", "password_file": str(d / "no-such-password")}


# (what, mutation, exit code, words the message must hold, extra CLI arguments)
MISTAKES: list[tuple[str, Mutation, int, tuple[str, ...], tuple[str, ...]]] = [
    ("wrong data dir", setm("etcd-2", "data_dir", "/var/lib/etcdx"), 3,
     ("etcd-2", "data_dir", "/var/lib/etcdx", "/var/lib/etcd"), ()),
    ("names swapped", swap_names, 3, ("name", "etcd-1", "etcd-2"), ()),
    ("wrong peer port", setm("etcd-3", "peer_url", "PEER3:2390"), 3,
     ("etcd-3", "peer_url", "2390", "2380"), ()),
    ("wrong client port", setm("etcd-1", "client_url", "CLIENT1:2479"), 3,
     ("etcd-1", "client_url", "2479"), ()),
    ("wrong runtime", wrong_runtime, 3, ("runtime", "static-pod"), ()),
    ("wrong user", setssh("etcd-2", "user", "nobody"), 3,
     ("etcd-2", "authentication failed", "ssh.user"), ()),
    ("ops user without sudo", ops_without_sudo, 3, ("etcd-",), ()),
    ("member listed twice", listed_twice, 2, ("used by member",), ()),
    ("missing key file", setssh("etcd-1", "identity_file", "/nonexistent/id"), 2,
     ("etcd-1", "ssh.identity_file", "no such file"), ()),
    ("unreachable jump host", setssh("etcd-1", "jump", "root@127.0.0.1:1"), 3,
     ("etcd-1", "jump", "ssh.jump"), ()),
    ("unknown host key", empty_known_hosts, 3, ("fingerprint", "ssh-keyscan"), ()),
    ("YAML not a mapping", text("- a\n- b\n"), 2, ("must be a mapping",), ()),
    ("empty file", text(""), 2, ("must be a mapping",), ()),
    ("broken YAML", text("cluster: [\n"), 2, ("not valid YAML", "line"), ()),
    ("unknown field", unknown_top, 2, ("unknown field", "clusterr"), ()),
    ("not a URL", setm("etcd-1", "client_url", "etcd-1:2379"), 2,
     ("etcd-1", "client_url", "https://HOST:PORT"), ()),
    ("relative data dir", setm("etcd-1", "data_dir", "var/lib/etcd"), 2,
     ("etcd-1", "data_dir"), ()),
    ("port not a number", setssh("etcd-1", "port", "22x"), 2, ("ssh.port",), ()),
    ("bad unit name", setm("etcd-2", "unit", "etcd; rm -rf /"), 2, ("unit",), ()),
    ("missing CA file", missing_ca, 2, ("tls.ca", "no such file"), ()),
    ("password file missing", auth_without_file, 2, ("auth.password_file",), ()),
    ("exclude an unknown member", lambda inv, d: None, 2, ("etcd-9",),
     ("--exclude", "etcd-9")),
    ("saved plan not JSON", lambda inv, d: None, 2, ("not JSON",), ("--plan", "PLAN_GARBAGE")),
    ("saved plan of unknown kind", lambda inv, d: None, 2, ("unknown step kind",),
     ("--plan", "PLAN_UNKNOWN")),
    ("saved plan with an edited command", lambda inv, d: None, 3,
     ("not what this inventory", "argv"), ("--plan", "PLAN_TAMPERED")),
]


def host_states(lab: LabHandle) -> dict[str, str]:
    return {h.name: ssh(lab.dir, h.mgmt_ip, HOST_STATE).stdout for h in lab.state.hosts}


def test_every_inventory_mistake_is_refused_clearly_and_changes_nothing(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5-old", keys=200)
    cli("lab", "stop-etcd", "etcd-2", "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    good = yaml.safe_load((lab.dir / "inventory.yaml").read_text())
    plan = json.loads(cli("plan", "-i", str(lab.dir / "inventory.yaml"), "-o", "json").stdout)
    (lab.dir / "garbage.json").write_text("{not json")
    unknown = copy.deepcopy(plan)
    unknown["steps"][2]["kind"] = "rm_rf"
    (lab.dir / "unknown.json").write_text(json.dumps(unknown))
    tampered = copy.deepcopy(plan)
    fence = next(s for s in tampered["steps"] if s["id"].startswith("fence:"))
    fence["actions"][0]["argv"] = ["sh", "-c", "rm -rf /var/lib/etcd"]
    (lab.dir / "tampered.json").write_text(json.dumps(tampered))
    before = host_states(lab)
    urls = {m["name"]: (m["peer_url"].rsplit(":", 1)[0], m["client_url"].rsplit(":", 1)[0])
            for m in good["members"]}
    assert len(MISTAKES) >= 20
    problems = []
    for i, (what, mutate, code, words, extra) in enumerate(MISTAKES):
        inv = copy.deepcopy(good)
        out = mutate(inv, lab.dir)
        path = lab.dir / f"mistake-{i}.yaml"
        body = out if isinstance(out, str) else yaml.safe_dump(inv)
        for name, (peer, client) in urls.items():
            body = body.replace(f"PEER{name[-1]}", peer).replace(f"CLIENT{name[-1]}", client)
        path.write_text(body)
        args = [a.replace("PLAN_GARBAGE", str(lab.dir / "garbage.json"))
                .replace("PLAN_UNKNOWN", str(lab.dir / "unknown.json"))
                .replace("PLAN_TAMPERED", str(lab.dir / "tampered.json")) for a in extra]
        res = cli("execute", "-i", str(path), "--confirm", "--journal-dir",
                  str(lab.dir / f"journal-{i}"), *args, check=False, timeout=120)
        said = res.stdout + res.stderr
        if res.returncode != code or "Traceback" in said or not all(w in said for w in words):
            problems.append(f"{what}: exit {res.returncode} (want {code}): {said[-600:]}")
        if (lab.dir / f"journal-{i}" / "current").exists():
            problems.append(f"{what}: left an unfinished run behind")
    assert not problems, "\n".join(problems)
    assert host_states(lab) == before
