"""Golden-file tests: the etcd static-pod manifests kubeadm 1.34, 1.35 and 1.36 write, through
the config editor.

Fixtures (tests/fixtures/kubeadm/):

* ``v1.3X.yaml``: ``/etc/kubernetes/manifests/etcd.yaml`` as ``kubeadm init`` writes it on node
  ``cp1`` (advertise address 10.0.0.11) with the default ClusterConfiguration;
* ``v1.3X-extra.yaml``: the same with ClusterConfiguration ``etcd.local.extraArgs`` (three new
  flags and one that overrides a kubeadm default) and a ``--patches`` strategic-merge patch that
  adds a volume and its mount;
* ``<name>.force-new-cluster.yaml`` and ``<name>.existing-cluster.yaml``: what the editor made of
  ``<name>.yaml``, generated once by running it and checked by eye to differ only in the flag
  lines (see EDITS).

Each fixture starts with a comment naming the kubernetes/kubernetes files it follows. They were
reconstructed from kubeadm's source, not captured from a node:

* cmd/kubeadm/app/phases/etcd/local.go, GetEtcdPodSpec and getEtcdCommand: the flags below
  (etcd >= 3.6 gets ``--feature-gates=InitialCorruptCheck=true`` and
  ``--watch-progress-notify-interval=5s`` instead of the ``--experimental-*`` pair), the
  ``kubeadm.kubernetes.io/etcd.advertise-client-urls`` annotation, mounts etcd-data and
  etcd-certs, 100m/100Mi requests, liveness ``/livez`` and readiness and startup ``/readyz`` probes
  on 127.0.0.1:2381;
* cmd/kubeadm/app/util/staticpod/utils.go, ComponentPod and the probe helpers: labels,
  hostNetwork, ``priority: 2000001000`` (set since 1.27), priorityClassName
  system-node-critical, seccomp RuntimeDefault, volumes sorted by name, probe timings (startup
  failureThreshold 24 = the default 4m health-check timeout / 10s);
* cmd/kubeadm/app/util/arguments.go, ArgumentsToCommand: defaults sorted by name; since the
  extraArgs fix (kubernetes#135400, backported to 1.34 and 1.35 patches) user extraArgs keep the
  user's order and replace the defaults they name. Their exact place (after the sorted defaults,
  as here) was inferred from that change's description and diff, not read from the code;
* serialisation by kubeadmutil.MarshalToYaml: keys sorted, ``status: {}``, and no
  ``creationTimestamp: null`` (zero creationTimestamps are omitted since v1.34.0-alpha.1,
  kubernetes#130989);
* cmd/kubeadm/app/constants/constants.go, SupportedEtcdVersion: see ETCD_TAG.

The source index used had no tag checkouts, so the files were read at the versions it held, and
the etcd pins at the newest patches seen (v1.34.7, v1.35.4, v1.36.0) could not be confirmed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from etcd_recovery.runtimes.config import (
    FLAG_FORCE_NEW_CLUSTER,
    config_flags,
    config_with_flags,
    manifest_flags,
    manifest_image,
    manifest_with_flags,
    unified_diff,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubeadm"
MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"

NODE = "cp1"
IP = "10.0.0.11"
PKI = "/etc/kubernetes/pki"

# SupportedEtcdVersion[minor] as last seen: 1.34 on release-1.34 after v1.34.0's 3.6.4-0;
# 1.35 from kubernetes#135271 (v1.35.0 candidates); 1.36 from kubernetes#137107
# (v1.36.0-alpha.2; the 3.6.9 bump was held past the 1.36 freeze).
ETCD_TAG = {"1.34": "3.6.5-0", "1.35": "3.6.6-0", "1.36": "3.6.8-0"}
MINORS = sorted(ETCD_TAG)
NAMES = [f"v{minor}{variant}" for minor in MINORS for variant in ("", "-extra")]

# getEtcdCommand's defaultArguments for `kubeadm init` on cp1 (no initialCluster: the node alone).
KUBEADM_DEFAULTS = {
    "name": NODE,
    "feature-gates": "InitialCorruptCheck=true",
    "listen-client-urls": f"https://127.0.0.1:2379,https://{IP}:2379",
    "advertise-client-urls": f"https://{IP}:2379",
    "listen-peer-urls": f"https://{IP}:2380",
    "initial-advertise-peer-urls": f"https://{IP}:2380",
    "data-dir": "/var/lib/etcd",
    "cert-file": f"{PKI}/etcd/server.crt",
    "key-file": f"{PKI}/etcd/server.key",
    "trusted-ca-file": f"{PKI}/etcd/ca.crt",
    "client-cert-auth": "true",
    "peer-cert-file": f"{PKI}/etcd/peer.crt",
    "peer-key-file": f"{PKI}/etcd/peer.key",
    "peer-trusted-ca-file": f"{PKI}/etcd/ca.crt",
    "peer-client-cert-auth": "true",
    "snapshot-count": "10000",
    "listen-metrics-urls": "http://127.0.0.1:2381",
    "watch-progress-notify-interval": "5s",
    "initial-cluster": f"{NODE}=https://{IP}:2380",
}
# ClusterConfiguration etcd.local.extraArgs of the -extra fixtures, in the user's order.
EXTRA_ARGS = [
    ("quota-backend-bytes", "8589934592"),
    ("auto-compaction-mode", "periodic"),
    ("auto-compaction-retention", "1h"),
    ("listen-metrics-urls", f"http://127.0.0.1:2381,http://{IP}:2381"),
]
# Flags the tool never sets and that must come through every edit byte for byte.
KEPT_LINES = [
    "    - --feature-gates=InitialCorruptCheck=true\n",
    "    - --watch-progress-notify-interval=5s\n",
]
EXTRA_VOLUME_MOUNT = "    - mountPath: /var/backups/etcd\n      name: etcd-backup\n"
EXTRA_VOLUME = ("  - hostPath:\n      path: /var/backups/etcd\n      type: DirectoryOrCreate\n"
                "    name: etcd-backup\n")

ORIGINAL_CLUSTER = f"{NODE}=https://{IP}:2380"
EXISTING_CLUSTER = ("cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,"
                    "cp3=https://10.0.0.13:2380")

Flags = dict[str, str]
# edit name: (flags set, flags removed, the way back: (set, removed), diff lines (- and +))
EDITS: dict[str, tuple[Flags, list[str], tuple[Flags, list[str]], list[str]]] = {
    "force-new-cluster": (
        {FLAG_FORCE_NEW_CLUSTER: "true"}, [],
        ({}, [FLAG_FORCE_NEW_CLUSTER]),
        ["+    - --force-new-cluster=true"],
    ),
    "existing-cluster": (
        {"initial-cluster": EXISTING_CLUSTER, "initial-cluster-state": "existing"}, [],
        ({"initial-cluster": ORIGINAL_CLUSTER}, ["initial-cluster-state"]),
        [f"-    - --initial-cluster={ORIGINAL_CLUSTER}",
         f"+    - --initial-cluster={EXISTING_CLUSTER}",
         "+    - --initial-cluster-state=existing"],
    ),
}
CASES = [(name, edit) for name in NAMES for edit in EDITS]
CASE_IDS = [f"{name}.{edit}" for name, edit in CASES]


def read(name: str) -> str:
    """A fixture's exact text (bytes decoded as UTF-8, line breaks untouched)."""
    return (FIXTURES / name).read_bytes().decode("utf-8")


def is_extra(name: str) -> bool:
    return name.endswith("-extra")


def minor_of(name: str) -> str:
    return name[1:].removesuffix("-extra")


def kubeadm_command(name: str) -> list[str]:
    """The etcd command kubeadm writes for this fixture, built from kubeadm's rules."""
    overrides = EXTRA_ARGS if is_extra(name) else []
    overridden = {flag for flag, _ in overrides}
    defaults = sorted((k, v) for k, v in KUBEADM_DEFAULTS.items() if k not in overridden)
    return ["etcd", *(f"--{k}={v}" for k, v in [*defaults, *overrides])]


def command_lines(text: str) -> list[str]:
    """The items of the etcd command, read off the text line by line (not through YAML)."""
    lines = text.splitlines()
    start = lines.index("  - command:") + 1
    items = []
    for line in lines[start:]:
        if not line.startswith("    - "):
            break
        items.append(line[len("    - "):])
    return items


def outside_command(text: str) -> tuple[str, str]:
    """The text before the etcd command's items and the text after them."""
    head_end = text.index("  - command:\n") + len("  - command:\n")
    tail_start = text.index("\n    image: ") + 1
    return text[:head_end], text[tail_start:]


def without_command(text: str) -> object:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    for container in doc["spec"]["containers"]:
        container.pop("command")
    return doc


def edit(text: str, name: str) -> str:
    set_, remove, _, _ = EDITS[name]
    return manifest_with_flags(text, MANIFEST, set_, remove)


# -------------------------------------------------------------------------------- fixtures

def test_fixture_set_is_complete() -> None:
    expected = {f"{name}.yaml" for name in NAMES}
    expected |= {f"{name}.{e}.yaml" for name, e in CASES}
    assert {p.name for p in FIXTURES.iterdir()} == expected


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_what_kubeadm_writes(name: str) -> None:
    text = read(f"{name}.yaml")
    assert text.startswith("# kubeadm ")  # the header citing the sources
    assert command_lines(text) == kubeadm_command(name)
    doc = yaml.safe_load(text)
    (container,) = doc["spec"]["containers"]
    assert container["command"] == kubeadm_command(name)
    assert "creationTimestamp" not in doc["metadata"]
    assert doc["metadata"]["annotations"] == {
        "kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{IP}:2379"}
    assert doc["status"] == {}
    assert doc["spec"]["hostNetwork"] is True
    assert doc["spec"]["priority"] == 2000001000
    for probe, path in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/readyz")]:
        assert container[probe]["httpGet"] == {
            "host": "127.0.0.1", "path": path, "port": 2381, "scheme": "HTTP"}
    volumes = [v["name"] for v in doc["spec"]["volumes"]]
    mounts = [m["name"] for m in container["volumeMounts"]]
    extra = ["etcd-backup"] if is_extra(name) else []
    assert volumes == ["etcd-certs", "etcd-data", *extra]
    assert mounts == ["etcd-data", "etcd-certs", *extra]


# -------------------------------------------------------------------------------- reading

@pytest.mark.parametrize("name", NAMES)
def test_manifest_flags_reads_every_flag_kubeadm_wrote(name: str) -> None:
    text = read(f"{name}.yaml")
    written = [item.removeprefix("--").split("=", 1) for item in command_lines(text)[1:]]
    expected = {k: v for k, v in written}
    assert len(expected) == len(written)  # kubeadm writes each flag once
    got = manifest_flags(text, MANIFEST)
    assert got == expected
    assert list(got.items()) == [(k, v) for k, v in written]  # in command order
    assert config_flags("static-pod", text, MANIFEST) == expected
    assert got["feature-gates"] == "InitialCorruptCheck=true"
    assert got["watch-progress-notify-interval"] == "5s"
    assert not any(flag.startswith("experimental-") for flag in got)
    if is_extra(name):
        for flag, value in EXTRA_ARGS:
            assert got[flag] == value


@pytest.mark.parametrize("name", NAMES)
def test_manifest_image_has_the_etcd_tag_kubeadm_pins(name: str) -> None:
    tag = ETCD_TAG[minor_of(name)]
    assert manifest_image(read(f"{name}.yaml"), MANIFEST) == f"registry.k8s.io/etcd:{tag}"
    # kubeadm writes the 3.6 flags (feature-gates, watch-progress-notify-interval) only for
    # etcd >= 3.6.0, so the fixture must pin such an etcd.
    major, minor = (int(part) for part in tag.split(".")[:2])
    assert (major, minor) >= (3, 6)


# -------------------------------------------------------------------------------- editing

@pytest.mark.parametrize(("name", "edit_name"), CASES, ids=CASE_IDS)
def test_edit_matches_golden_file(name: str, edit_name: str) -> None:
    text = read(f"{name}.yaml")
    golden = read(f"{name}.{edit_name}.yaml")
    out = edit(text, edit_name)
    assert out.encode() == golden.encode()
    set_, remove, _, _ = EDITS[edit_name]
    assert config_with_flags("static-pod", text, MANIFEST, set_, remove) == golden
    expected = {k: v for k, v in manifest_flags(text, MANIFEST).items() if k not in remove}
    expected.update(set_)
    assert manifest_flags(golden, MANIFEST) == expected


@pytest.mark.parametrize(("name", "edit_name"), CASES, ids=CASE_IDS)
def test_diff_has_only_the_flag_lines(name: str, edit_name: str) -> None:
    text = read(f"{name}.yaml")
    out = edit(text, edit_name)
    diff = unified_diff(text, out, MANIFEST).splitlines()
    assert diff[:2] == [f"--- a{MANIFEST}", f"+++ b{MANIFEST}"]
    changed = [line for line in diff[2:] if line[:1] in "+-"]
    assert changed == EDITS[edit_name][3]
    # New flags go right after the last item kubeadm wrote.
    last = kubeadm_command(name)[-1]
    added = [line[1:] for line in changed if line.startswith("+")]
    new_flags = [line for line in added if line.split("=", 1)[0] not in
                 {f"    - --{k}" for k in manifest_flags(text, MANIFEST)}]
    lines = out.split("\n")
    at = lines.index(f"    - {last}")
    assert lines[at + 1:at + 1 + len(new_flags)] == new_flags


@pytest.mark.parametrize(("name", "edit_name"), CASES, ids=CASE_IDS)
def test_undoing_the_edit_gives_back_the_original_bytes(name: str, edit_name: str) -> None:
    raw = (FIXTURES / f"{name}.yaml").read_bytes()
    out = edit(raw.decode("utf-8"), edit_name)
    _, _, (set_back, remove_back), _ = EDITS[edit_name]
    back = manifest_with_flags(out, MANIFEST, set_back, remove_back)
    assert back.encode("utf-8") == raw
    via_dispatch = config_with_flags("static-pod", out, MANIFEST, set_back, remove_back)
    assert via_dispatch.encode("utf-8") == raw


@pytest.mark.parametrize(("name", "edit_name"), CASES, ids=CASE_IDS)
def test_editing_again_changes_nothing(name: str, edit_name: str) -> None:
    out = edit(read(f"{name}.yaml"), edit_name)
    assert edit(out, edit_name) == out


@pytest.mark.parametrize(("name", "edit_name"), CASES, ids=CASE_IDS)
def test_untouched_flags_and_volumes_are_byte_identical(name: str, edit_name: str) -> None:
    text = read(f"{name}.yaml")
    out = edit(text, edit_name)
    kept = list(KEPT_LINES)
    if is_extra(name):
        kept += [f"    - --{flag}={value}\n" for flag, value in EXTRA_ARGS]
    for line in kept:
        assert text.count(line) == 1, line
        assert out.count(line) == 1, line
    if is_extra(name):
        for block in (EXTRA_VOLUME_MOUNT, EXTRA_VOLUME):
            assert text.count(block) == 1 and out.count(block) == 1
    # Everything outside the command items (header comment, metadata, image, probes, mounts,
    # volumes, status) is the same text, and the items the edit does not name keep their order.
    assert outside_command(out) == outside_command(text)
    set_, remove, _, _ = EDITS[edit_name]
    named = {f"--{flag}" for flag in [*set_, *remove]}
    untouched = [item for item in command_lines(text) if item.split("=", 1)[0] not in named]
    assert [item for item in command_lines(out)
            if item.split("=", 1)[0] not in named] == untouched
    assert without_command(out) == without_command(text)


def test_no_flag_line_would_need_quoting_or_wrapping() -> None:
    # Guards the fixtures' realism: kubeadm's YAML encoder writes these items plain, one per
    # line; a value it would quote or fold would make the fixtures differ from its output.
    for name in NAMES:
        for item in command_lines(read(f"{name}.yaml")):
            assert re.fullmatch(r"[A-Za-z0-9=:,./_-]+", item), item
