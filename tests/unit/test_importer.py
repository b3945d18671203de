"""inventory import: the etcd hosts out of kubespray/Ansible (YAML, INI) and hosts.json."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import UsageError
from etcd_recovery.importer import ImportedHost, parse_source

KUBESPRAY_YAML = """
all:
  vars:
    ansible_user: ubuntu
  hosts:
    node1: {ansible_host: 10.0.0.1, etcd_member_name: etcd1}
    node2: {ansible_host: 10.0.0.2, etcd_member_name: etcd2, ansible_port: 2222}
    node3: {ansible_host: 10.0.0.3, etcd_member_name: etcd3}
    worker: {ansible_host: 10.0.0.9}
  children:
    kube_control_plane:
      hosts: {node1: {}, node2: {}}
    etcd:
      hosts: {node1: {}, node2: {}, node3: {ansible_user: admin}}
      vars: {ansible_ssh_private_key_file: ~/.ssh/etcd}
"""

KUBESPRAY_INI = """
# kubespray sample
[all]
node1 ansible_host=10.0.0.1 etcd_member_name=etcd1
node2 ansible_host=10.0.0.2 etcd_member_name=etcd2 ansible_user=admin
worker ansible_host=10.0.0.9

[etcd]
node1
node2

[etcd:vars]
ansible_port=2200

[all:vars]
ansible_user=ubuntu
"""


def test_kubespray_yaml() -> None:
    hosts = parse_source(KUBESPRAY_YAML, "hosts.yaml")
    assert hosts == [
        ImportedHost("10.0.0.1", "etcd1", "ubuntu", None, "~/.ssh/etcd"),
        ImportedHost("10.0.0.2", "etcd2", "ubuntu", 2222, "~/.ssh/etcd"),
        ImportedHost("10.0.0.3", "etcd3", "admin", None, "~/.ssh/etcd"),
    ]


def test_kubespray_ini() -> None:
    hosts = parse_source(KUBESPRAY_INI, "hosts.ini")
    assert hosts == [ImportedHost("10.0.0.1", "etcd1", "ubuntu", 2200, None),
                     ImportedHost("10.0.0.2", "etcd2", "admin", 2200, None)]


def test_vmware_hosts_json() -> None:
    data = [{"name": "cp-1", "member_name": "etcd-a", "host": "10.1.0.1", "username": "root",
             "private_key": "/k/id"},
            {"name": "cp-2", "host": "10.1.0.2", "username": "root"}]
    assert parse_source(json.dumps(data), "hosts.json") == [
        ImportedHost("10.1.0.1", "etcd-a", "root", None, "/k/id"),
        ImportedHost("10.1.0.2", "cp-2", "root", None, None)]
    assert parse_source(json.dumps({"hosts": data}), "hosts.json")[0].address == "10.1.0.1"


@pytest.mark.parametrize(("text", "words"), [
    ("[all]\nnode1\n", r"no \[etcd\] group"),
    ("all:\n  hosts: {a: {}}\n", "no 'etcd' group"),
    ("[]", "expected a list of hosts"),
    ("- 1\n- 2\n", "not an Ansible inventory"),
    ("[etcd]\nnode1 ansible_port=x\n", "not a port number"),
    ("[etcd\nnode1\n", "not an Ansible INI section"),
])
def test_mistakes_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_source(text, "src")


@settings(max_examples=300, deadline=1000)
@given(st.text(max_size=300))
def test_any_text_gives_hosts_or_a_usage_error(text: str) -> None:
    try:
        parse_source(text, "src")
    except UsageError as exc:
        assert str(exc).startswith("src")
