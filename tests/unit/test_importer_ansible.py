"""Ansible inventories as Ansible (ansible-core v2.17.5) reads them: host ranges, host:port,
quotes, inline comments, :vars and :children sections, variable precedence; on real kubespray
inventories (tests/fixtures/kubespray, tags in its README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import UsageError
from etcd_recovery.importer import (
    MAX_HOSTS,
    ImportedHost,
    expand_range,
    ini_value,
    parse_source,
    split_port,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubespray"


@pytest.mark.parametrize(("pattern", "hosts"), [
    ("node1", ["node1"]),
    ("node[1:3]", ["node1", "node2", "node3"]),
    ("node[01:03]", ["node01", "node02", "node03"]),
    ("n[1:10:2]", ["n1", "n3", "n5", "n7", "n9"]),
    ("n[01:10:3]", ["n01", "n04", "n07", "n10"]),
    ("[:2].x", ["0.x", "1.x", "2.x"]),
    ("db-[a:c]", ["db-a", "db-b", "db-c"]),
    ("[y:B]", ["y", "z", "A", "B"]),                 # Ansible's letters are a-zA-Z
    ("r[1:2]-n[a:b]", ["r1-na", "r1-nb", "r2-na", "r2-nb"]),
    ("10.0.0.[8:10]", ["10.0.0.8", "10.0.0.9", "10.0.0.10"]),
    ("n[3:1]", []),                                   # an empty range, as range() gives
])
def test_ranges_expand_as_ansible_does(pattern: str, hosts: list[str]) -> None:
    assert expand_range(pattern) == hosts


@pytest.mark.parametrize(("pattern", "words"), [
    ("n[1:]", "needs an end"),
    ("n[01:3]", "same length"),
    ("n[1:3:0]", "cannot be 0"),
    ("n[1:3:x]", "not a number"),
    ("n[a:3]", "neither a numeric nor an alphabetic range"),
    ("n[c:a]", "begin <= end"),
    ("n[1]", r"\[begin:end\]"),
    ("n[1:2:3:4]", r"\[begin:end\]"),
    ("n[1:99999999]", f"more than {MAX_HOSTS} hosts"),
    ("n[1:100]m[1:100]", f"more than {MAX_HOSTS} hosts"),
])
def test_bad_ranges_are_named(pattern: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        expand_range(pattern, "src")


@pytest.mark.parametrize(("pattern", "split"), [
    ("node1", ("node1", None)),
    ("node1:2222", ("node1", 2222)),
    ("node[1:3]:2222", ("node[1:3]", 2222)),
    ("10.0.0.1:22", ("10.0.0.1", 22)),
    ("[10.0.0.1]:22", ("10.0.0.1", 22)),
    ("[fe80::1]:22", ("fe80::1", 22)),
    ("fe80::1", ("fe80::1", None)),
    ("node_-:22", ("node_-:22", None)),             # not a host name: kept whole
])
def test_host_and_port(pattern: str, split: tuple[str, int | None]) -> None:
    assert split_port(pattern) == split


@pytest.mark.parametrize(("text", "value"), [
    ('"ubuntu"', "ubuntu"), ("'ubuntu'", "ubuntu"), ("ubuntu", "ubuntu"), ("22", 22),
    ('"22"', "22"), ("[1, 2]", [1, 2]), ("{{ansible_env.HOME}}/r", "{{ansible_env.HOME}}/r"),
    ("True", True),
])
def test_values_are_python_literals_or_text(text: str, value: object) -> None:
    assert ini_value(text, "src") == value


def hosts(text: str, source: str = "hosts.ini") -> list[ImportedHost]:
    return parse_source(text, source)


def test_quotes_come_off_as_ansible_takes_them_off() -> None:
    got = hosts('[etcd]\nnode1 ansible_user="ubuntu" ansible_port="2222" '
                "ansible_ssh_private_key_file='/k/my key' etcd_member_name=\"etcd1\"\n")
    assert got == [ImportedHost("node1", "etcd1", "ubuntu", 2222, "/k/my key")]


def test_ranges_in_an_ini_group() -> None:
    got = hosts("[etcd]\nnode[01:03] ansible_user=core\n")
    assert [h.address for h in got] == ["node01", "node02", "node03"]
    assert {h.user for h in got} == {"core"}


def test_a_port_with_the_host_is_its_ansible_port_unless_a_variable_says_otherwise() -> None:
    got = hosts("[etcd]\nnode1:2201\nnode2:2202 ansible_port=22\n")
    assert [(h.address, h.port) for h in got] == [("node1", 2201), ("node2", 22)]


def test_an_inline_comment_ends_a_host_line() -> None:
    got = hosts("[etcd]\nnode1 ansible_host=10.0.0.1  # etcd_member_name=etcd1\n")
    assert got == [ImportedHost("10.0.0.1")]


def test_vars_sections_take_the_whole_rest_of_the_line() -> None:
    """In [group:vars] Ansible splits at the first '=' only: quotes are read as a literal, and
    a comment after the value is part of a value that is no literal."""
    got = hosts('[etcd]\nnode1\n[etcd:vars]\nansible_user = "admin"\n'
                "ansible_ssh_private_key_file=/k/id # the key\n")
    assert got == [ImportedHost("node1", None, "admin", None, "/k/id # the key")]


def test_children_declared_later_are_waited_for() -> None:
    text = ("[etcd:children]\ncontrol\n[all:vars]\nansible_user=a\n[control]\ncp[1:2]\n"
            "[control:vars]\nansible_user=c\n[etcd:vars]\nansible_user=e\n")
    got = hosts(text)
    # control is deeper than etcd (all -> etcd -> control): its vars win.
    assert got == [ImportedHost("cp1", None, "c"), ImportedHost("cp2", None, "c")]


def test_group_vars_precedence_host_over_child_over_parent_over_all() -> None:
    text = ("[all:vars]\nansible_user=from-all\nansible_port=1\netcd_member_name=x\n"
            "[k8s:children]\netcd\n[k8s:vars]\nansible_user=from-k8s\nansible_port=2\n"
            "[etcd]\nn1\nn2 ansible_user=own\n[etcd:vars]\nansible_port=3\n")
    got = hosts(text)
    assert got == [ImportedHost("n1", "x", "from-k8s", 3), ImportedHost("n2", "x", "own", 3)]


def test_group_priority_breaks_equal_depth() -> None:
    text = ("[a]\nn1\n[b]\nn1\n[etcd:children]\na\nb\n"
            "[a:vars]\nansible_user=from-a\nansible_group_priority=5\n"
            "[b:vars]\nansible_user=from-b\n")
    assert hosts(text)[0].user == "from-a"
    assert hosts(text.replace("ansible_group_priority=5", "x=1"))[0].user == "from-b"


def test_hosts_in_no_group_but_all_join_ungrouped_as_ansible_reconciles() -> None:
    """Checked against ansible-core 2.17.5 itself: hosts listed only under [all] join
    ungrouped, so a group with ungrouped as a child holds them; a host listed in ungrouped
    and in another group leaves ungrouped."""
    text = "[all]\nn1 ansible_user=u\n[etcd:children]\nungrouped\n"
    assert hosts(text) == [ImportedHost("n1", None, "u")]
    text = "n1\n[etcd]\nn2\n[a]\nn1\n[etcd:children]\nungrouped\n"
    assert [h.address for h in hosts(text)] == ["n2"]


@pytest.mark.parametrize(("text", "words"), [
    ("[etcd]\nn1\n[etcd:vars]\nansible_group_priority=high\n", "not a number"),
    ("[etcd:children]\nall\n", "'all' cannot be a child"),
    ("[etcd:children]\nnope\n", r"\[etcd:children\] names group 'nope', which is not declared"),
    ("[etcd]\nn1\n[other:vars]\nx=1\n", r"\[other:vars\] is for a group that is not declared"),
    ("[etcd:hostz]\nn1\n", "unknown type"),
    ("[etcd]\nn1 user\n", "expected key=value after the host, got 'user'"),
    ("[etcd]\nn1 a='x\n", "cannot split the host line"),
    ("[etcd]\nn1:\n", "ends in ':'"),
    ("[etcd]\n---\n", "looks like a YAML file"),
    ("[etcd:vars]\nnovalue\n[etcd]\nn1\n", r"expected key=value in \[etcd:vars\]"),
    ("[etcd:children]\na\n[a:children]\netcd\n[a]\nn1\n", "children of each other"),
    ("[ etcd ]\nn1\n", "not an Ansible INI section"),
    ("[etcd]\n# node1\n", "the etcd group has no hosts"),
])
def test_ini_mistakes_are_named_with_their_line(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        hosts(text)


# ------------------------------------------------------------------ real kubespray files

def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def uncomment(text: str, whole: bool) -> str:
    """Fill a kubespray sample in: remove the '# ' before each node line (``whole``: also
    the one before its ip=..., which is otherwise a comment to Ansible)."""
    text = re.sub(r"^# (node\d)", r"\1", text, flags=re.M)
    return text.replace("  # ip=", "  ip=") if whole else text


def test_kubespray_v2_31_sample_as_shipped_has_no_etcd_host() -> None:
    with pytest.raises(UsageError, match="the etcd group has no hosts"):
        hosts(fixture("v2.31.0-sample-inventory.ini"), "inventory.ini")


def test_kubespray_v2_31_sample_filled_in() -> None:
    text = fixture("v2.31.0-sample-inventory.ini")
    half = hosts(uncomment(text, whole=False), "inventory.ini")
    # etcd_member_name after '#' is a comment to Ansible: not read.
    assert half == [ImportedHost(f"95.54.0.{12 + i}") for i in range(3)]
    whole = hosts(uncomment(text, whole=True), "inventory.ini")
    assert whole == [ImportedHost(f"95.54.0.{12 + i}", f"etcd{i + 1}") for i in range(3)]


def test_kubespray_v2_24_sample_filled_in() -> None:
    text = uncomment(fixture("v2.24.0-sample-inventory.ini"), whole=True)
    assert hosts(text, "inventory.ini") == [
        ImportedHost(f"95.54.0.{12 + i}", f"etcd{i + 1}") for i in range(3)]
    # The etcd group's lines commented out, as shipped: no etcd host.
    with pytest.raises(UsageError, match="the etcd group has no hosts"):
        hosts(fixture("v2.24.0-sample-inventory.ini"), "inventory.ini")


def test_kubespray_docs_example_with_ungrouped_host_lines_first() -> None:
    got = hosts(fixture("v2.31.0-docs-inventory.ini"), "inventory.ini")
    assert got == [ImportedHost(f"95.54.0.{12 + i}") for i in range(3)]


def test_kubespray_local_inventory() -> None:
    assert hosts(fixture("v2.31.0-local-hosts.ini"), "hosts.ini") == [ImportedHost("node1")]


def test_inventory_builder_yaml() -> None:
    got = hosts(fixture("v2.20.0-inventory-builder-shape.yaml"), "hosts.yaml")
    assert got == [ImportedHost("10.10.1.3", None, "core"),
                   ImportedHost("10.10.1.4", None, "core", 2222),
                   ImportedHost("10.10.1.5", "etcd3", "core")]


def test_yaml_host_patterns_expand_and_take_a_port() -> None:
    text = ("all:\n  children:\n    etcd:\n      hosts:\n        'cp[1:2]:2200':\n"
            "          ansible_user: ops\n")
    assert hosts(text, "x.yml") == [ImportedHost("cp1", None, "ops", 2200),
                                    ImportedHost("cp2", None, "ops", 2200)]


@pytest.mark.parametrize(("text", "words"), [
    ("etcd:\n  hosts:\n    1: {}\n", "must be a string"),
    ("etcd:\n  hosts:\n    a: [1]\n", "must be a mapping"),
    ("etcd:\n  hosts: [a]\n", "'hosts' must be a mapping"),
    ("etcd:\n  children:\n    etcd: {}\n", "child of itself"),
    ("a: &x\n  children:\n    b: *x\netcd: {hosts: {n: }}\n", "nested more than 100"),
    ("x: [", "not YAML"),
])
def test_yaml_mistakes_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        hosts(text, "x.yaml")


INI_BITS = st.sampled_from(["[etcd]", "[etcd:vars]", "[etcd:children]", "[a]", "[a:children]",
                            "n[1:3]", "n[01:3]", "n:22", "a", "etcd", "x=1", "x='y", '"q"',
                            "#", ";", " ", "=", ":", "[", "]", "---", "n[a:c]", "\n"])


@settings(max_examples=400, deadline=2000)
@given(st.lists(INI_BITS, max_size=40))
def test_any_ini_like_text_gives_hosts_or_a_usage_error(bits: list[str]) -> None:
    text = "".join(bits)
    try:
        got = parse_source(text, "inv.ini")
    except UsageError as exc:
        assert str(exc).startswith("inv.ini")
    else:
        assert got and all(isinstance(h, ImportedHost) and h.address for h in got)
