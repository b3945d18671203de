"""Reading and rewriting etcd's flags in a static-pod manifest and a systemd environment file.

Inputs come from the lab's own generators (what the lab hosts really run) and from hand-written
variants of what operators and other installers write. Every rewrite is checked three ways: the
flags read back as intended, only the intended lines change, and undoing it restores the bytes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import FormatError, UsageError
from etcd_recovery.lab.configs import etcd_flags, static_pod_manifest, systemd_env
from etcd_recovery.lab.state import LabHost
from etcd_recovery.runtimes.config import (
    FLAG_FORCE_NEW_CLUSTER,
    config_flags,
    config_with_flags,
    env_flags,
    env_var,
    env_with_flags,
    initial_cluster,
    manifest_flags,
    manifest_image,
    manifest_with_flags,
    parse_initial_cluster,
    unified_diff,
)

MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
ENV = "/etc/etcd/etcd.env"

HOSTS = [LabHost(name=f"etcd-{i}", container=f"erl0-etcd-{i}", mgmt_ip=f"172.30.16.{10 + i}",
                 peer_ip=f"172.31.16.{10 + i}") for i in (1, 2, 3)]
POD_FLAGS = etcd_flags(HOSTS[0], HOSTS, "/etc/kubernetes/pki/etcd", "erl0-token")
ENV_FLAGS = etcd_flags(HOSTS[1], HOSTS, "/etc/etcd/pki", "erl0-token")
LAB_MANIFEST = static_pod_manifest(POD_FLAGS, "3.5.16")
LAB_ENV = systemd_env(ENV_FLAGS)

# kubeadm's own layout, with the fields a real control plane has around the command.
KUBEADM = """\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.1:2379
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.1:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --experimental-initial-corrupt-check=true
    - --experimental-watch-progress-notify-interval=5s
    - --initial-advertise-peer-urls=https://10.0.0.1:2380
    - --initial-cluster=cp-1=https://10.0.0.1:2380
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls=https://10.0.0.1:2380
    - --name=cp-1
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --snapshot-count=10000
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    image: registry.k8s.io/etcd:3.5.9-0
    imagePullPolicy: IfNotPresent
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /health?exclude=NOSPACE&serializable=true
        port: 2381
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: etcd
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {}
"""

# Hand-edited: comments, quoted items (both styles), deeper indentation, a trailing comment.
QUOTED = """\
apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  # etcd itself
  - name: etcd
    image: "registry.k8s.io/etcd:3.4.23-0"
    command:
      - etcd
      - "--name=etcd-1"          # this member
      - '--data-dir=/var/lib/etcd'
      - --initial-cluster-state=new
      # who is in the cluster
      - "--initial-cluster=etcd-1=https://10.0.0.1:2380"
  hostNetwork: true
"""

# Flags in args, a sidecar first, an absolute etcd path, a bare boolean and a single dash.
ARGS = """\
apiVersion: v1
kind: Pod
metadata:
  name: etcd
spec:
  containers:
  - name: sidecar
    image: busybox
    command:
    - sleep
    - infinity
  - name: etcd
    image: registry.k8s.io/etcd:3.5.16-0
    command:
    - /usr/local/bin/etcd
    args:
    - --name=etcd-2
    - --force-new-cluster
    - -data-dir=/var/lib/etcd
    env:
    - name: GOMAXPROCS
      value: "2"
"""

# The flags are the file's last lines and there is no final newline.
AT_END = """\
apiVersion: v1
kind: Pod
metadata: {name: etcd}
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --name=etcd-3
    - --data-dir=/var/lib/etcd"""

# What kubespray and people write by hand.
ENV_HAND = """\
# etcd settings
; an old-style comment

ETCD_NAME=etcd-1
export ETCD_DATA_DIR=/var/lib/etcd
ETCD_INITIAL_CLUSTER="etcd-1=https://10.0.0.1:2380,etcd-2=https://10.0.0.2:2380"
  ETCD_LISTEN_PEER_URLS = https://10.0.0.1:2380  \t
ETCD_INITIAL_CLUSTER_TOKEN='k8s etcd'
ETCDCTL_API=3
GOMAXPROCS=4
ETCD_LOG_OUTPUTS="a \\"b\\" \\$HOME \\\\ \\`x\\`"
ETCD_UNQUOTED_SPACES=a  b
"""
ENV_HAND_FLAGS = {
    "name": "etcd-1",
    "data-dir": "/var/lib/etcd",
    "initial-cluster": "etcd-1=https://10.0.0.1:2380,etcd-2=https://10.0.0.2:2380",
    "listen-peer-urls": "https://10.0.0.1:2380",
    "initial-cluster-token": "k8s etcd",
    "log-outputs": 'a "b" $HOME \\ `x`',
    "unquoted-spaces": "a  b",
}

ENV_EXPORTED = """\
export ETCD_NAME="etcd-1"
export ETCD_DATA_DIR="/var/lib/etcd"
"""


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) between two texts, by plain difflib."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.unified_diff(old.split("\n"), new.split("\n"), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else added).append(line[1:])
    return removed, added


def offset_of_line(text: str, marker: str) -> int:
    """Byte offset of the start of the line holding ``marker``."""
    index = text.index(marker)
    return len(text[:text.rfind("\n", 0, index) + 1].encode())


# -------------------------------------------------------------------------------- reading

@pytest.mark.parametrize(("text", "flags", "image"), [
    (LAB_MANIFEST, POD_FLAGS, "registry.k8s.io/etcd:3.5.16-0"),
    (KUBEADM, dict(line[len("    - --"):].split("=", 1) for line in KUBEADM.splitlines()
                   if line.startswith("    - --")),
     "registry.k8s.io/etcd:3.5.9-0"),
    (QUOTED, {"name": "etcd-1", "data-dir": "/var/lib/etcd", "initial-cluster-state": "new",
              "initial-cluster": "etcd-1=https://10.0.0.1:2380"},
     "registry.k8s.io/etcd:3.4.23-0"),
    (ARGS, {"name": "etcd-2", "force-new-cluster": "true", "data-dir": "/var/lib/etcd"},
     "registry.k8s.io/etcd:3.5.16-0"),
    (AT_END, {"name": "etcd-3", "data-dir": "/var/lib/etcd"}, None),
    (LAB_MANIFEST.replace("\n", "\r\n"), POD_FLAGS, "registry.k8s.io/etcd:3.5.16-0"),
    (LAB_MANIFEST.replace("  - command:\n    - etcd\n", "  - command: [etcd, --x=1]\n")
     .replace("    - --", "    # - --"), {"x": "1"}, "registry.k8s.io/etcd:3.5.16-0"),
], ids=["lab", "kubeadm", "quoted", "args", "at-end", "crlf", "flow"])
def test_manifest_flags_and_image(text: str, flags: dict[str, str], image: str | None) -> None:
    got = manifest_flags(text, MANIFEST)
    assert got == flags
    assert list(got) == list(flags)  # in command order
    assert manifest_image(text, MANIFEST) == image
    assert config_flags("static-pod", text, MANIFEST) == flags


def test_kubeadm_table_really_has_the_flags() -> None:
    flags = manifest_flags(KUBEADM, MANIFEST)
    assert len(flags) == 19 and flags["name"] == "cp-1"
    assert flags["experimental-watch-progress-notify-interval"] == "5s"


@pytest.mark.parametrize(("text", "flags"), [
    (LAB_ENV, ENV_FLAGS),
    (ENV_HAND, ENV_HAND_FLAGS),
    (ENV_EXPORTED, {"name": "etcd-1", "data-dir": "/var/lib/etcd"}),
    (LAB_ENV.replace("\n", "\r\n"), ENV_FLAGS),
    ("", {}),
    ("# nothing\n\n", {}),
    ("ETCD_NAME=x", {"name": "x"}),
    ('ETCD_NAME=""\nETCD_DATA_DIR=\n', {"name": "", "data-dir": ""}),
    ("ETCD_NAME=a#b;c\n", {"name": "a#b;c"}),
], ids=["lab", "hand", "exported", "crlf", "empty", "comments-only", "no-newline", "empties",
        "hash-inside"])
def test_env_flags(text: str, flags: dict[str, str]) -> None:
    got = env_flags(text, ENV)
    assert got == flags
    assert list(got) == list(flags)
    assert config_flags("systemd", text, ENV) == flags


def test_env_var_mapping() -> None:
    assert env_var("initial-cluster-state") == "ETCD_INITIAL_CLUSTER_STATE"
    assert env_var(FLAG_FORCE_NEW_CLUSTER) == "ETCD_FORCE_NEW_CLUSTER"
    text = "".join(f"{env_var(k)}={v}\n" for k, v in ENV_FLAGS.items())
    assert text == LAB_ENV.split("\n", 1)[1]  # the lab writes exactly this mapping


# -------------------------------------------------------------------------------- rewriting

Edit = tuple[Mapping[str, str], list[str], list[str], list[str]]

MANIFEST_EDITS: list[tuple[str, str, Edit]] = [
    ("lab-set-in-place", LAB_MANIFEST,
     ({"initial-cluster-state": "existing"}, [],
      ["    - --initial-cluster-state=new"], ["    - --initial-cluster-state=existing"])),
    ("lab-add", LAB_MANIFEST,
     ({FLAG_FORCE_NEW_CLUSTER: "true"}, [],
      [], ["    - --force-new-cluster=true"])),
    ("lab-remove", LAB_MANIFEST,
     ({}, ["initial-cluster-token"],
      ["    - --initial-cluster-token=erl0-token"], [])),
    ("lab-all-three", LAB_MANIFEST,
     ({"initial-cluster": "etcd-1=https://172.31.16.11:2380", "force-new-cluster": "true"},
      ["snapshot-count", "not-there"],
      [f"    - --initial-cluster={POD_FLAGS['initial-cluster']}", "    - --snapshot-count=10000"],
      ["    - --initial-cluster=etcd-1=https://172.31.16.11:2380",
       "    - --force-new-cluster=true"])),
    ("lab-remove-last-and-add", LAB_MANIFEST,
     ({"force-new-cluster": "true"}, ["trusted-ca-file"],
      ["    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt"],
      ["    - --force-new-cluster=true"])),
    ("lab-unchanged-value", LAB_MANIFEST, ({"name": "etcd-1"}, [], [], [])),
    ("lab-value-needs-quotes", LAB_MANIFEST,
     ({"name": "a b: #c", "log-outputs": "it's"}, [],
      ["    - --name=etcd-1"],
      ['    - "--name=a b: #c"', "    - --log-outputs=it's"])),
    ("kubeadm-add", KUBEADM,
     ({FLAG_FORCE_NEW_CLUSTER: "true"}, [],
      [], ["    - --force-new-cluster=true"])),
    ("quoted-keeps-styles", QUOTED,
     ({"name": "etcd-9", "data-dir": "/data/it's", "initial-cluster-state": "existing",
       "force-new-cluster": "true"}, [],
      ['      - "--name=etcd-1"          # this member',
       "      - '--data-dir=/var/lib/etcd'",
       "      - --initial-cluster-state=new"],
      ['      - "--name=etcd-9"          # this member',
       "      - '--data-dir=/data/it''s'",
       "      - --initial-cluster-state=existing",
       '      - "--force-new-cluster=true"'])),
    ("quoted-escapes", QUOTED,
     ({"name": 'say "hi" \\o/'}, [],
      ['      - "--name=etcd-1"          # this member'],
      ['      - "--name=say \\"hi\\" \\\\o/"          # this member'])),
    ("quoted-remove-commented", QUOTED,
     ({}, ["name"], ['      - "--name=etcd-1"          # this member'], [])),
    ("args-add-after-args", ARGS,
     ({"initial-cluster-state": "existing"}, ["force-new-cluster"],
      ["    - --force-new-cluster"], ["    - --initial-cluster-state=existing"])),
    ("args-single-dash-kept", ARGS,
     ({"data-dir": "/data"}, [],
      ["    - -data-dir=/var/lib/etcd"], ["    - -data-dir=/data"])),
    ("args-bare-flag-set", ARGS,
     ({"force-new-cluster": "false"}, [],
      ["    - --force-new-cluster"], ["    - --force-new-cluster=false"])),
    ("args-bare-flag-true-unchanged", ARGS, ({"force-new-cluster": "true"}, [], [], [])),
    ("at-end-add", AT_END,
     ({"force-new-cluster": "true"}, [], [], ["    - --force-new-cluster=true"])),
    ("at-end-remove-last", AT_END,
     ({}, ["data-dir"], ["    - --data-dir=/var/lib/etcd"], [])),
]


@pytest.mark.parametrize(("text", "edit"), [(t, e) for _, t, e in MANIFEST_EDITS],
                         ids=[i for i, _, _ in MANIFEST_EDITS])
def test_manifest_with_flags(text: str, edit: Edit) -> None:
    set_, remove, gone_lines, new_lines = edit
    new = manifest_with_flags(text, MANIFEST, set_, remove)
    want = {k: v for k, v in manifest_flags(text, MANIFEST).items() if k not in remove}
    want.update(set_)
    assert manifest_flags(new, MANIFEST) == want
    removed, added = changed_lines(text, new)
    assert sorted(removed) == sorted(gone_lines)
    assert sorted(added) == sorted(new_lines)
    if not gone_lines and not new_lines:
        assert new == text
    # kubelet reads the same command as we do, and nothing else moved
    old_doc, new_doc = yaml.safe_load(text), yaml.safe_load(new)
    etcd = next(c for c in new_doc["spec"]["containers"] if c["name"] == "etcd")
    argv = etcd["command"] + (etcd.get("args") or [])
    assert sorted(argv[1:]) == sorted(
        a for a in argv[1:] if a.lstrip("-").split("=")[0] in want)
    for doc in (old_doc, new_doc):
        for c in doc["spec"]["containers"]:
            c.pop("command", None)
            c.pop("args", None)
    assert old_doc == new_doc


def test_manifest_new_flags_go_right_after_the_last_flag() -> None:
    new = manifest_with_flags(LAB_MANIFEST, MANIFEST, {"b-flag": "2", "a-flag": "1"}, [])
    lines = new.splitlines()
    i = lines.index("    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt")
    assert lines[i + 1:i + 4] == ["    - --b-flag=2", "    - --a-flag=1",
                                  "    image: registry.k8s.io/etcd:3.5.16-0"]
    assert new.endswith("\n") and "\r" not in new


def test_manifest_crlf_stays_crlf() -> None:
    text = LAB_MANIFEST.replace("\n", "\r\n")
    new = manifest_with_flags(text, MANIFEST, {"force-new-cluster": "true",
                                               "name": "etcd-9"}, [])
    assert "    - --force-new-cluster=true\r\n" in new and "    - --name=etcd-9\r\n" in new
    assert new.count("\n") == new.count("\r\n") == text.count("\n") + 1


ROUND_TRIP = {
    "lab": LAB_MANIFEST, "kubeadm": KUBEADM, "quoted": QUOTED, "at-end": AT_END,
    "crlf": LAB_MANIFEST.replace("\n", "\r\n"), "no-final-newline": LAB_MANIFEST.rstrip("\n"),
}


@pytest.mark.parametrize("text", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_manifest_force_new_cluster_and_back_is_byte_identical(text: str) -> None:
    forced = manifest_with_flags(text, MANIFEST, {FLAG_FORCE_NEW_CLUSTER: "true"}, [])
    assert manifest_flags(forced, MANIFEST)[FLAG_FORCE_NEW_CLUSTER] == "true"
    removed, added = changed_lines(text, forced)
    assert removed == [] and len(added) == 1
    assert added[0].strip(" \r").strip("\"'") in ("- --force-new-cluster=true",
                                                   '- "--force-new-cluster=true')
    back = config_with_flags("static-pod", forced, MANIFEST, {}, [FLAG_FORCE_NEW_CLUSTER])
    assert back == text


def test_args_force_new_cluster_removed_and_back() -> None:
    plain = manifest_with_flags(ARGS, MANIFEST, {}, [FLAG_FORCE_NEW_CLUSTER])
    assert FLAG_FORCE_NEW_CLUSTER not in manifest_flags(plain, MANIFEST)
    again = manifest_with_flags(plain, MANIFEST, {FLAG_FORCE_NEW_CLUSTER: "true"}, [])
    assert manifest_with_flags(again, MANIFEST, {}, [FLAG_FORCE_NEW_CLUSTER]) == plain


ENV_EDITS: list[tuple[str, str, Edit]] = [
    ("lab-set-in-place", LAB_ENV,
     ({"initial-cluster-state": "existing"}, [],
      ["ETCD_INITIAL_CLUSTER_STATE=new"], ["ETCD_INITIAL_CLUSTER_STATE=existing"])),
    ("lab-add", LAB_ENV,
     ({FLAG_FORCE_NEW_CLUSTER: "true"}, [], [], ["ETCD_FORCE_NEW_CLUSTER=true"])),
    ("lab-remove", LAB_ENV,
     ({}, ["snapshot-count", "absent"], ["ETCD_SNAPSHOT_COUNT=10000"], [])),
    ("lab-needs-quotes", LAB_ENV,
     ({"name": "a b", "log-outputs": 'x"$y`\\z', "initial-cluster-token": "t;rm -rf"}, [],
      ["ETCD_NAME=etcd-2", "ETCD_INITIAL_CLUSTER_TOKEN=erl0-token"],
      ['ETCD_NAME="a b"', 'ETCD_LOG_OUTPUTS="x\\"\\$y\\`\\\\z"',
       'ETCD_INITIAL_CLUSTER_TOKEN="t;rm -rf"'])),
    ("lab-unchanged", LAB_ENV, ({"name": "etcd-2"}, [], [], [])),
    ("hand-keeps-styles", ENV_HAND,
     ({"name": "etcd-9", "data-dir": "/data", "initial-cluster": "etcd-9=https://h:2380",
       "initial-cluster-token": "other token", "listen-peer-urls": "https://h:2380"}, [],
      ["ETCD_NAME=etcd-1", "export ETCD_DATA_DIR=/var/lib/etcd",
       'ETCD_INITIAL_CLUSTER="etcd-1=https://10.0.0.1:2380,etcd-2=https://10.0.0.2:2380"',
       "ETCD_INITIAL_CLUSTER_TOKEN='k8s etcd'",
       "  ETCD_LISTEN_PEER_URLS = https://10.0.0.1:2380  \t"],
      ["ETCD_NAME=etcd-9", "export ETCD_DATA_DIR=/data",
       'ETCD_INITIAL_CLUSTER="etcd-9=https://h:2380"',
       "ETCD_INITIAL_CLUSTER_TOKEN='other token'",
       "  ETCD_LISTEN_PEER_URLS = https://h:2380"])),
    ("hand-single-quote-to-double", ENV_HAND,
     ({"initial-cluster-token": "it's"}, [],
      ["ETCD_INITIAL_CLUSTER_TOKEN='k8s etcd'"], ['ETCD_INITIAL_CLUSTER_TOKEN="it\'s"'])),
    ("hand-add-plain", ENV_HAND,
     ({FLAG_FORCE_NEW_CLUSTER: "true"}, ["log-outputs"],
      ['ETCD_LOG_OUTPUTS="a \\"b\\" \\$HOME \\\\ \\`x\\`"'], ["ETCD_FORCE_NEW_CLUSTER=true"])),
    ("exported-follows-convention", ENV_EXPORTED,
     ({FLAG_FORCE_NEW_CLUSTER: "true"}, [], [], ['export ETCD_FORCE_NEW_CLUSTER="true"'])),
    ("empty-file", "", ({"name": "x"}, [], [], ["ETCD_NAME=x"])),
]


@pytest.mark.parametrize(("text", "edit"), [(t, e) for _, t, e in ENV_EDITS],
                         ids=[i for i, _, _ in ENV_EDITS])
def test_env_with_flags(text: str, edit: Edit) -> None:
    set_, remove, gone_lines, new_lines = edit
    new = env_with_flags(text, ENV, set_, remove)
    want = {k: v for k, v in env_flags(text, ENV).items() if k not in remove}
    want.update(set_)
    assert env_flags(new, ENV) == want
    removed, added = changed_lines(text, new)
    assert sorted(removed) == sorted(gone_lines)
    assert sorted(added) == sorted(new_lines)
    if not gone_lines and not new_lines:
        assert new == text


ENV_ROUND_TRIP = {
    "lab": LAB_ENV, "hand": ENV_HAND, "exported": ENV_EXPORTED, "empty": "",
    "crlf": LAB_ENV.replace("\n", "\r\n"), "no-final-newline": LAB_ENV.rstrip("\n"),
    "comment-only-no-newline": "# etcd",
}


@pytest.mark.parametrize("text", ENV_ROUND_TRIP.values(), ids=ENV_ROUND_TRIP.keys())
def test_env_force_new_cluster_and_back_is_byte_identical(text: str) -> None:
    forced = env_with_flags(text, ENV, {FLAG_FORCE_NEW_CLUSTER: "true"}, [])
    assert env_flags(forced, ENV)[FLAG_FORCE_NEW_CLUSTER] == "true"
    assert forced.startswith(text)  # appended at the end, nothing before it moved
    assert forced.rstrip("\r\n").endswith("ETCD_FORCE_NEW_CLUSTER" + (
        '="true"' if text is ENV_EXPORTED else "=true"))
    back = config_with_flags("systemd", forced, ENV, {}, [FLAG_FORCE_NEW_CLUSTER])
    assert back == text


# -------------------------------------------------------------------------------- refusals

def pod(command: str, extra: str = "") -> str:
    return ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  containers:\n"
            f"  - name: etcd\n    image: registry.k8s.io/etcd:3.5.16-0\n{command}{extra}")


MANIFEST_READ_ERRORS = [
    ("not-yaml", "kind: Pod\nspec: [\n", "not valid YAML", None),
    ("empty", "", "empty file", None),
    ("two-documents", LAB_MANIFEST + "---\n" + LAB_MANIFEST, "not valid YAML", None),
    ("not-a-mapping", "- a\n- b\n", "not a mapping", None),
    ("not-a-pod", LAB_MANIFEST.replace("kind: Pod", "kind: Deployment"), "expected 'Pod'",
     "kind: Deployment"),
    ("no-etcd-container", LAB_MANIFEST.replace("    name: etcd\n", "    name: main\n"),
     "no container named 'etcd'", None),
    ("two-etcd-containers", pod("    command: [etcd]\n", "  - name: etcd\n    image: x\n"),
     "two containers", None),
    ("no-command", pod("    args: [--name=a]\n"), "has no command", None),
    ("command-not-a-list", pod("    command: etcd --name=a\n"), "not a list",
     "command: etcd"),
    ("empty-command", pod("    command: []\n"), "is empty", None),
    ("not-etcd", pod("    command:\n    - /bin/sh\n    - -c\n    - etcd --name=a\n"),
     "runs '/bin/sh', not etcd", "- /bin/sh"),
    ("duplicate-flag", pod("    command:\n    - etcd\n    - --name=a\n    - --data-dir=/d\n"
                           "    - -name=b\n"), "given twice (lines 11 and 13)", "- -name=b"),
    ("separate-value", pod("    command:\n    - etcd\n    - --name\n    - etcd-1\n"),
     "'etcd-1' is not a flag", "- etcd-1"),
    ("double-dash", pod("    command:\n    - etcd\n    - --\n    - --name=a\n"),
     "'--' ends etcd's flags", "- --\n"),
    ("bad-flag", pod("    command:\n    - etcd\n    - ---name=a\n"), "not a flag etcd",
     "- ---name"),
    ("not-a-string", pod("    command:\n    - etcd\n    - 2380\n"), "is not a string",
     "- 2380"),
    ("merge-key", pod("    command: [etcd]\n").replace("  - name: etcd\n",
                                                       "  - <<: {a: 1}\n    name: etcd\n"),
     "merge keys", "<<"),
    ("two-items-per-line", pod("    command:\n    - etcd\n    - - --name=a\n"),
     "not a string", "- - --name"),
    ("duplicate-key", pod("    command: [etcd]\n    command: [etcd, --a=1]\n"),
     "'command' appears twice", "command: [etcd, --a=1]"),
    ("control-char", LAB_MANIFEST.replace("etcd-data", "etcd\x07data", 1), "not valid YAML",
     "etcd\x07data"),
]


@pytest.mark.parametrize(("text", "message", "marker"),
                         [(t, m, k) for _, t, m, k in MANIFEST_READ_ERRORS],
                         ids=[i for i, *_ in MANIFEST_READ_ERRORS])
def test_manifest_read_refusals(text: str, message: str, marker: str | None) -> None:
    for call in (lambda: manifest_flags(text, MANIFEST),
                 lambda: manifest_with_flags(text, MANIFEST, {"name": "x"}, [])):
        with pytest.raises(FormatError) as info:
            call()
        assert info.value.file == MANIFEST
        assert str(info.value).startswith(MANIFEST + " at offset ")
        assert message in str(info.value)
        if marker is not None:
            assert info.value.offset == offset_of_line(text, marker)


MANIFEST_EDIT_ERRORS = [
    ("flow-command", pod("    command: [etcd, --name=a]\n"), "flow style", "command: [etcd"),
    ("flow-args", pod("    command:\n    - etcd\n    args: [--name=a]\n"), "flow style",
     "args: ["),
    ("anchor", pod("    command: &cmd\n    - etcd\n    - --name=a\n"),
     "anchors and aliases", "command: &cmd"),
    ("alias", pod("    command:\n    - etcd\n    - --name=a\n",
                  "    workingDir: &w /x\n    env:\n    - name: W\n      value: *w\n"),
     "anchors and aliases", "workingDir"),
    ("multiline-plain", pod("    command:\n    - etcd\n    - --initial-cluster=a=http://a:1,\n"
                            "      b=http://b:1\n"), "spans several lines", "--initial-c"),
    ("multiline-quoted", pod('    command:\n    - etcd\n    - "--name=\n      a"\n'),
     "spans several lines", '"--name='),
    ("tagged-item", pod("    command:\n    - etcd\n    - !!str --name=a\n"),
     "carries a tag", "!!str"),
    ("item-below-its-dash", pod("    command:\n    - etcd\n    -\n      --name=a\n"),
     "not on a line of its own", "--name=a"),
    ("env-shadows-flag", pod("    command:\n    - etcd\n    - --name=a\n",
                             "    env:\n    - name: ETCD_NAME\n      value: b\n"),
     "ETCD_NAME", None),
    ("lone-cr", pod("    command:\n    - etcd\n    - --name=a\n", "    # x\r# y\n"),
     "unusual line break", "# x"),
]


@pytest.mark.parametrize(("text", "message", "marker"),
                         [(t, m, k) for _, t, m, k in MANIFEST_EDIT_ERRORS],
                         ids=[i for i, *_ in MANIFEST_EDIT_ERRORS])
def test_manifest_edit_refusals(text: str, message: str, marker: str | None) -> None:
    assert isinstance(manifest_flags(text, MANIFEST), dict)  # reading is still fine
    with pytest.raises(FormatError) as info:
        manifest_with_flags(text, MANIFEST, {"name": "x"}, [])
    assert info.value.file == MANIFEST and str(info.value).startswith(MANIFEST)
    assert message in str(info.value)
    if marker is not None:
        assert info.value.offset == offset_of_line(text, marker)


ENV_ERRORS = [
    ("no-equals", "ETCD_NAME=a\nETCD_DATA_DIR /d\n", "no '='", "ETCD_DATA_DIR /d"),
    ("bad-name", "ETCD-NAME=a\n", "invalid variable name", "ETCD-NAME"),
    ("unterminated-double", 'ETCD_NAME="etcd-1\n', "unterminated double", "ETCD_NAME"),
    ("unterminated-single", "# c\nETCD_NAME='etcd-1\n", "unterminated single", "ETCD_NAME"),
    ("continuation", "ETCD_NAME=etcd-\\\n1\n", "backslash", "ETCD_NAME"),
    ("after-quote", 'ETCD_NAME="a" b\n', "after the closing quote", "ETCD_NAME"),
    ("odd-escape", 'ETCD_NAME="a\\nb"\n', "systemd versions disagree", "ETCD_NAME"),
    ("single-backslash", "ETCD_NAME='a\\b'\n", "systemd versions disagree", "ETCD_NAME"),
    ("inner-quote", 'ETCD_NAME=a"b\n', "quote inside an unquoted value", "ETCD_NAME"),
    ("duplicate", "ETCD_NAME=a\n# x\nexport ETCD_NAME=b\n", "set twice (lines 1 and 3)",
     "export ETCD_NAME"),
    ("comment-backslash", "# see \\\nETCD_NAME=a\n", "comment ending in a backslash", "# see"),
    ("lone-cr", "ETCD_NAME=a\rETCD_DATA_DIR=/d\n", "carriage return", "ETCD_NAME"),
    ("trailing-comment", "ETCD_NAME=etcd-1  # this member\n", "' #' inside", "ETCD_NAME"),
    ("nul", "ETCD_NAME=a\nETCD_X=\0\n", "NUL", "ETCD_X"),
    ("multibyte-offset", "# ünïcödé\nETCD_NAME=\"x\n", "unterminated", "ETCD_NAME"),
]


@pytest.mark.parametrize(("text", "message", "marker"),
                         [(t, m, k) for _, t, m, k in ENV_ERRORS],
                         ids=[i for i, *_ in ENV_ERRORS])
def test_env_refusals(text: str, message: str, marker: str) -> None:
    for call in (lambda: env_flags(text, ENV),
                 lambda: env_with_flags(text, ENV, {"name": "x"}, [])):
        with pytest.raises(FormatError) as info:
            call()
        assert info.value.file == ENV and str(info.value).startswith(ENV + " at offset ")
        assert message in str(info.value)
        assert info.value.offset == offset_of_line(text, marker)


Editor = Callable[[str, str, Mapping[str, str], list[str]], str]


@pytest.mark.parametrize(("editor", "text"), [(manifest_with_flags, LAB_MANIFEST),
                                              (env_with_flags, LAB_ENV)], ids=["pod", "env"])
@pytest.mark.parametrize(("set_", "remove", "message"), [
    ({"name": "a\nb"}, [], "one printable line"),
    ({"name": "a\rb"}, [], "one printable line"),
    ({"name": "a\tb"}, [], "one printable line"),
    ({"name": "a\u2028b"}, [], "one printable line"),
    ({"--name": "a"}, [], "is not a flag name"),
    ({"na me": "a"}, [], "is not a flag name"),
    ({}, ["name=x"], "is not a flag name"),
    ({"name": "a"}, ["name"], "both set and removed"),
])
def test_bad_requests_are_usage_errors(editor: Editor, text: str, set_: dict[str, str],
                                       remove: list[str], message: str) -> None:
    file = MANIFEST if editor is manifest_with_flags else ENV
    with pytest.raises(UsageError, match=message) as info:
        editor(text, file, set_, remove)
    assert file in str(info.value)


def test_env_refuses_empty_values_and_unmappable_names() -> None:
    with pytest.raises(UsageError, match="etcd ignores an empty"):
        env_with_flags(LAB_ENV, ENV, {"name": ""}, [])
    with pytest.raises(UsageError, match="not a flag name"):
        env_with_flags(LAB_ENV, ENV, {"Name": "x"}, [])
    with pytest.raises(UsageError, match="not a flag name"):
        env_with_flags(LAB_ENV, ENV, {"data_dir": "x"}, [])
    # a manifest may carry an empty value: --x= is a valid Go flag
    new = manifest_with_flags(LAB_MANIFEST, MANIFEST, {"initial-cluster-token": ""}, [])
    assert manifest_flags(new, MANIFEST)["initial-cluster-token"] == ""


def test_unknown_runtime() -> None:
    with pytest.raises(UsageError, match="unknown runtime 'docker'"):
        config_flags("docker", LAB_ENV, ENV)
    with pytest.raises(UsageError, match="unknown runtime"):
        config_with_flags("k3s", LAB_ENV, ENV, {}, [])


# -------------------------------------------------------------------------------- diff

def test_unified_diff_labels_and_only_changed_lines() -> None:
    new = manifest_with_flags(LAB_MANIFEST, MANIFEST, {FLAG_FORCE_NEW_CLUSTER: "true"},
                              ["snapshot-count"])
    diff = unified_diff(LAB_MANIFEST, new, MANIFEST)
    lines = diff.splitlines()
    assert lines[0] == "--- a/etc/kubernetes/manifests/etcd.yaml"
    assert lines[1] == "+++ b/etc/kubernetes/manifests/etcd.yaml"
    assert lines[2].startswith("@@ ")
    assert [ln for ln in lines[3:] if ln[:1] in "+-"] == [
        "-    - --snapshot-count=10000", "+    - --force-new-cluster=true"]
    assert unified_diff(LAB_MANIFEST, LAB_MANIFEST, MANIFEST) == ""


def test_unified_diff_marks_missing_final_newline() -> None:
    diff = unified_diff("a\nb", "a\nc\n", "/x")
    assert diff == ("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n"
                    "+c\n")


# -------------------------------------------------------------------------------- initial-cluster

@pytest.mark.parametrize(("members", "text"), [
    ([("etcd-1", "https://10.0.0.1:2380")], "etcd-1=https://10.0.0.1:2380"),
    ([(h.name, h.peer_url) for h in HOSTS], POD_FLAGS["initial-cluster"]),
    ([("a", "http://[::1]:2380"), ("a", "https://10.0.0.2:2380")],
     "a=http://[::1]:2380,a=https://10.0.0.2:2380"),
])
def test_initial_cluster_round_trip(members: list[tuple[str, str]], text: str) -> None:
    assert initial_cluster(members) == text
    assert parse_initial_cluster(text) == members


def test_parse_initial_cluster_skips_empty_entries_like_etcd() -> None:
    assert parse_initial_cluster(",a=http://h:1,,b= http://g:2 ,") == [
        ("a", "http://h:1"), ("b", "http://g:2")]


@pytest.mark.parametrize(("members", "message"), [
    ([], "at least one member"),
    ([("", "https://h:2380")], "empty member name"),
    ([("a,b", "https://h:2380")], "may not hold ',' or '='"),
    ([("a=b", "https://h:2380")], "may not hold ',' or '='"),
    ([(" a", "https://h:2380")], "printable"),
    ([("a", "")], "empty URL"),
    ([("a", "https://h:2380,https://g:2380")], "may not hold ','"),
    ([("a", "h:2380")], "scheme"),
    ([("a", "ftp://h:2380")], "scheme"),
    ([("a", "https://h")], "host:port"),
    ([("a", "https://h:99999")], "not a URL"),
    ([("a", "https://h:2380/peer")], "path"),
])
def test_initial_cluster_refusals(members: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        initial_cluster(members)
    if members and not any(c in members[0][0] for c in ",=") and "," not in members[0][1]:
        with pytest.raises(FormatError, match=message) as info:
            parse_initial_cluster(f"{members[0][0]}={members[0][1]}", file=MANIFEST)
        assert info.value.file == MANIFEST


@pytest.mark.parametrize("value", ["", ",", "a", "a=http://h:1,b"])
def test_parse_initial_cluster_refusals(value: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_initial_cluster(value)
    assert info.value.file == "--initial-cluster"


# -------------------------------------------------------------------------------- properties

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

POD_COMMANDS = ["    command:\n    - etcd", "    command:\n    - /usr/local/bin/etcd",
                "    command:\n      - etcd", "    command: [etcd, --q=1]",
                "    command:\n    - sh", "    command: etcd", "    command: &c\n    - etcd"]
POD_GOOD_ITEMS = [
    "    - --name=a", "    - '--x=y'", '    - "--z=1"', "    - --force-new-cluster",
    "    - -data-dir=/d  # c", "    # comment", "", "    - '--q=it''s'", '    - "--e=\\"q\\""',
    "    - --initial-cluster=a=http://a:1,b=http://b:1", "    - --f=a b",
]
POD_BAD_ITEMS = [
    "    - --name=b", "    - x", "    - !!str --t=1", "    - &a --u=1", "    -\n      --v=1",
    '    - "--w=a\n      b"', "    - - y", "    - 12", "    - --", "\t- x",
    "    - --g=a,\n      b=http://b:1", "      - --deeper=1",
]
POD_TAILS = ["    image: e:1", "    env:\n    - name: ETCD_FORCE_NEW_CLUSTER", "status: {}",
             "# end", "  - name: etcd", "    args: [--a=1]", "    args: []", "    args:"]


@st.composite
def manifest_like(draw: st.DrawFn) -> str:
    """Mostly valid Pod manifests with a mix of good and bad command items."""
    parts = ["apiVersion: v1", "kind: Pod", "spec:", "  containers:", "  - name: etcd",
             draw(st.sampled_from(POD_COMMANDS[:3] * 3 + POD_COMMANDS))]
    items = st.sampled_from(POD_GOOD_ITEMS * 4 + POD_BAD_ITEMS)  # mostly good ones
    argv = draw(st.lists(items, max_size=9, unique=True))
    split = draw(st.integers(0, len(argv)))
    parts += argv[:split]
    if split < len(argv):
        parts += ["    args:", *argv[split:]]
    parts += draw(st.lists(st.sampled_from(POD_TAILS[:4] * 3 + POD_TAILS), max_size=2,
                           unique=True))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(parts) + draw(st.sampled_from(["", eol]))


ENV_LINES = [
    "ETCD_NAME=a", "export ETCD_DATA_DIR=b", "ETCD_DATA_DIR='x y'", 'ETCD_X="a\\"b"', "# c",
    "; c", "", "  ", "ETCD_Y=a b", "FOO=1", "ETCD_=x", "ETCD_T=é", "etcd_s=1", "ETCD_R = 1",
    "ETCD_Q=", 'ETCD_P=""', "  export   ETCD_O = 'o'  ",
]
ENV_BAD_LINES = ["ETCD_Z=\"", "ETCD_W='", "export", "=", "ETCD_V=\\", "# \\", "ETCD_U=a\rb",
                 "ETCD_NAME=b", "ETCD_S=a'b", "ETCD-N=1"]


@FAST
@given(st.text())
def test_any_text_gives_flags_or_format_error(text: str) -> None:
    for read in (manifest_flags, env_flags):
        try:
            flags = read(text, "/f")
        except FormatError as exc:
            assert exc.file == "/f" and 0 <= exc.offset <= len(text.encode("utf-8",
                                                                             "surrogatepass"))
        else:
            assert isinstance(flags, dict)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in flags.items())


@FAST
@given(manifest_like())
def test_manifest_like_text_reads_and_edits_or_refuses(text: str) -> None:
    try:
        flags = manifest_flags(text, "/m")
    except FormatError as exc:
        assert exc.file == "/m"
        return
    try:
        new = manifest_with_flags(text, "/m", {FLAG_FORCE_NEW_CLUSTER: "true"}, ["name"])
    except FormatError as exc:
        assert exc.file == "/m"
        return
    want = {k: v for k, v in flags.items() if k != "name"}
    want[FLAG_FORCE_NEW_CLUSTER] = "true"
    assert manifest_flags(new, "/m") == want


@FAST
@given(st.lists(st.sampled_from(ENV_LINES * 4 + ENV_BAD_LINES), max_size=12, unique=True),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_env_like_text_reads_and_edits_or_refuses(lines: list[str], eol: str,
                                                  final: bool) -> None:
    text = eol.join(lines) + (eol if final and lines else "")
    try:
        flags = env_flags(text, "/e")
    except FormatError as exc:
        assert exc.file == "/e"
        return
    new = env_with_flags(text, "/e", {FLAG_FORCE_NEW_CLUSTER: "true"}, ["name"])
    want = {k: v for k, v in flags.items() if k != "name"}
    want[FLAG_FORCE_NEW_CLUSTER] = "true"
    assert env_flags(new, "/e") == want
    if "name" not in flags and FLAG_FORCE_NEW_CLUSTER not in flags:
        assert env_with_flags(new, "/e", {}, [FLAG_FORCE_NEW_CLUSTER]) == text


VALUES = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn"),
                               blacklist_characters="\u2028\u2029\ufeff"), min_size=1,
                 max_size=30)


@settings(FAST, max_examples=60)
@given(VALUES, st.sampled_from([LAB_MANIFEST, QUOTED, ARGS]))
def test_any_value_round_trips_in_a_manifest(value: str, text: str) -> None:
    before = manifest_flags(text, MANIFEST)
    new = manifest_with_flags(text, MANIFEST, {"name": value, "new-flag": value}, [])
    flags = manifest_flags(new, MANIFEST)
    assert flags["name"] == value and flags["new-flag"] == value
    removed, added = changed_lines(text, new)
    assert len(removed) == (0 if value == before["name"] else 1)
    assert len(added) == len(removed) + 1
    restored = manifest_with_flags(new, MANIFEST, {"name": before["name"]}, ["new-flag"])
    assert manifest_flags(restored, MANIFEST) == before
    removed, added = changed_lines(text, restored)
    assert len(removed) == len(added) <= 1
    if added:  # a value that needed quotes leaves the item quoted; nothing else differs
        assert added[0].replace('"', "") == removed[0]


@FAST
@given(VALUES, st.sampled_from([LAB_ENV, ENV_HAND, ENV_EXPORTED]))
def test_any_value_round_trips_in_an_env_file(value: str, text: str) -> None:
    before = env_flags(text, ENV)
    new = env_with_flags(text, ENV, {"name": value, "new-flag": value}, [])
    flags = env_flags(new, ENV)
    assert flags["name"] == value and flags["new-flag"] == value
    removed, added = changed_lines(text, new)
    assert len(removed) == (0 if value == before["name"] else 1)
    assert len(added) == len(removed) + 1
    restored = env_with_flags(new, ENV, {"name": before["name"]}, ["new-flag"])
    assert env_flags(restored, ENV) == before
    removed, added = changed_lines(text, restored)
    assert len(removed) == len(added) <= 1
    if added:
        assert added[0].replace('"', "") == removed[0].replace('"', "")
