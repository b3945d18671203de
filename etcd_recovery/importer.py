"""inventory import: the hosts from the formats people already keep. Pure: text in, hosts out.

- a kubespray / Ansible inventory, YAML or INI: the hosts of the ``etcd`` group (its children's
  too), with ``ansible_host``, ``ansible_user``, ``ansible_port``,
  ``ansible_ssh_private_key_file`` and ``etcd_member_name``, read as Ansible reads them: host
  ranges (``node[1:3]``, ``node[01:03]``, ``[a:c]``, ``[1:10:2]``), ``host:port``, quoted
  values, ``:vars`` and ``:children`` sections, and variable precedence (host over group,
  a child group over its parents, ``all`` lowest). ``group_vars/`` and ``host_vars/``
  directories beside the file are not read;
- the ``hosts.json`` of vmware/etcd-recovery: a list (or ``{"hosts": [...]}``) of objects
  with ``name``, ``member_name``, ``host``, ``username``, ``private_key``.

What the source says about SSH is kept; the etcd side (URLs, data dirs, runtime) is read from
the hosts by ``discover``, or stated as missing.

The Ansible rules are those of ansible-core v2.17.5 (with its default configuration), read in
its source: ``lib/ansible/plugins/inventory/ini.py`` (sections, host lines split with shlex
and comments, values through ``ast.literal_eval``, pending ``:children`` and ``:vars``),
``lib/ansible/plugins/inventory/yaml.py`` (groups, hosts, vars, children),
``lib/ansible/plugins/inventory/__init__.py`` (``expand_hostname_range``),
``lib/ansible/parsing/utils/addresses.py`` (``parse_address``: the port, and which names
are hosts), ``lib/ansible/inventory/host.py`` (a port given with the host is its
``ansible_port``), ``lib/ansible/inventory/group.py`` (depth) and
``lib/ansible/inventory/helpers.py`` (``sort_groups``: depth, priority, name). The code here
is our own.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import string
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import UsageError

# One pattern may expand to this many hosts at most: node[1:100000000] is a mistake, and
# expanding it would only exhaust memory.
MAX_HOSTS = 4096


@dataclass(frozen=True)
class ImportedHost:
    address: str
    member_name: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None


def parse_source(text: str, source: str) -> list[ImportedHost]:
    """Guess the format from the name and the text and read the etcd hosts out of it: JSON
    (hosts.json, or an Ansible inventory in JSON), YAML (a ``.yml``/``.yaml`` file), INI (a
    file with an INI section), YAML (other text that is a YAML mapping or list), else INI (as
    Ansible, which reads any other file with its INI parser)."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, list) or (isinstance(data, dict) and "hosts" in data
                                      and isinstance(data["hosts"], list)):
            return parse_vmware(data, source)
        if isinstance(data, dict):
            return parse_ansible_yaml(data, source)
    if source.endswith((".yml", ".yaml")):
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
            raise UsageError(f"{source}: not YAML: {exc}") from exc
        return parse_ansible_yaml(data, source)
    if any(_SECTION.fullmatch(line.strip()) for line in text.splitlines()):
        return parse_ansible_ini(text, source)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError):
        data = None  # not YAML: Ansible's INI parser takes any other file
    if isinstance(data, dict | list):  # a YAML list is no inventory of either kind
        return parse_ansible_yaml(data, source)
    return parse_ansible_ini(text, source)


def _int(value: Any, source: str, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {what} {value!r} is not a port number") from exc


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_vmware(data: Any, source: str) -> list[ImportedHost]:
    items = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UsageError(f"{source}: expected a list of hosts (vmware/etcd-recovery hosts.json)")
    hosts = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("host"):
            raise UsageError(f"{source}: host #{i + 1} has no 'host'")
        hosts.append(ImportedHost(address=str(item["host"]),
                                  member_name=_str(item.get("member_name") or item.get("name")),
                                  user=_str(item.get("username")),
                                  identity_file=_str(item.get("private_key"))))
    return hosts


def _host_vars(name: str, hv: dict[str, Any], source: str) -> ImportedHost:
    return ImportedHost(address=str(hv.get("ansible_host") or name),
                        member_name=_str(hv.get("etcd_member_name")),
                        user=_str(hv.get("ansible_user")),
                        port=_int(hv.get("ansible_port"), source, "ansible_port"),
                        identity_file=_str(hv.get("ansible_ssh_private_key_file")))


# --------------------------------------------------------------------------- Ansible's model

@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    priority: int = 1                # ansible_group_priority


class _Ansible:
    """Groups, hosts and variables as Ansible's InventoryData holds them: ``all`` and
    ``ungrouped`` exist from the start; a host's port given with its name is its
    ``ansible_port`` when the host is first seen (host.py); later settings of a variable
    replace earlier ones."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_vars: dict[str, dict[str, Any]] = {}
        # Each host's groups, ancestors included, once reconciled (host.py's groups): what
        # its variables come from.
        self.host_groups: dict[str, set[str]] = {}

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group(name))

    def set_group_var(self, group: str, key: str, value: Any, where: str) -> None:
        """group.py's set_variable: ``ansible_group_priority`` is the group's priority (a
        number, or an error), not a variable."""
        g = self.group(group)
        if key != "ansible_group_priority":
            g.vars[key] = value
            return
        try:
            g.priority = int(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{where}: ansible_group_priority of group {group!r} is "
                             f"{value!r}, not a number") from None

    def add_host(self, host: str, group: str, port: int | None) -> None:
        if not host:
            return
        if host not in self.host_vars:
            self.host_vars[host] = {"ansible_port": port} if port else {}
        g = self.group(group)
        if host not in g.hosts:
            g.hosts.append(host)

    def add_child(self, parent: str, child: str) -> None:
        if parent == child:
            raise UsageError(f"{self.source}: group {child!r} cannot be a child of itself")
        if child == "all":  # every group is under all: a loop, as Ansible finds it
            raise UsageError(f"{self.source}: group 'all' cannot be a child of {parent!r} "
                             "(every group is under all)")
        p = self.group(parent)
        self.group(child)
        if child not in p.children:
            p.children.append(child)

    def parents(self) -> dict[str, list[str]]:
        """Each group's parents; a group without any (but ``all``) is a child of ``all``, as
        Ansible's reconcile makes it."""
        found: dict[str, list[str]] = {name: [] for name in self.groups}
        for g in self.groups.values():
            for c in g.children:
                found[c].append(g.name)
        for name, ps in found.items():
            if name != "all" and not ps:
                ps.append("all")
        return found

    def depths(self) -> dict[str, int]:
        """A group's depth: the longest way down from ``all`` (group.py); a loop of
        children is refused, as Ansible refuses it."""
        parents = self.parents()
        depth: dict[str, int] = {}

        def of(name: str, path: tuple[str, ...]) -> int:
            if name in path:
                loop = " -> ".join((*path[path.index(name):], name))
                raise UsageError(f"{self.source}: groups are children of each other ({loop})")
            if name not in depth:
                depth[name] = 0 if name == "all" else 1 + max(
                    of(p, (*path, name)) for p in parents[name])
            return depth[name]

        for name in self.groups:
            of(name, ())
        return depth

    def reconcile(self) -> None:
        """data.py's reconcile_inventory, host by host in the order they were first seen: a
        host listed in ``ungrouped`` that is in any other group (counting the groups above
        ``ungrouped`` itself) leaves it; a host in no group but ``all`` joins it."""
        parents = self.parents()
        self.depths()  # refuses a loop of children first
        ungrouped = self.groups["ungrouped"]
        for host in self.host_vars:
            self.host_groups[host] = self._groups_of(host, parents)
        for host in self.host_vars:
            mine = self.host_groups[host]
            if "ungrouped" in mine:
                if mine - {"all", "ungrouped"} and host in ungrouped.hosts:
                    ungrouped.hosts = [h for h in ungrouped.hosts if h != host]
                    self._leave(mine, "ungrouped", parents)
            elif mine == {"all"}:
                ungrouped.hosts.append(host)
                mine |= {"ungrouped", *self._ancestors("ungrouped", parents)}

    def _ancestors(self, group: str, parents: dict[str, list[str]]) -> set[str]:
        found: set[str] = set()
        todo = list(parents[group])
        while todo:
            g = todo.pop()
            if g not in found:
                found.add(g)
                todo += parents[g]
        return found

    def _leave(self, mine: set[str], group: str, parents: dict[str, list[str]]) -> None:
        """host.py's remove_group: the group goes, and so does each ancestor of it (but all)
        that is no ancestor of a group the host keeps. As there, this also takes away an
        ancestor the host is in by itself (a host of ``a`` and of ``ungrouped`` under ``a``
        loses ``a``'s variables, though ``a`` still lists it)."""
        if group not in mine:
            return
        mine.discard(group)
        for old in self._ancestors(group, parents):
            if old != "all" and not any(old in self._ancestors(g, parents) for g in mine):
                self._leave(mine, old, parents)

    def _groups_of(self, host: str, parents: dict[str, list[str]]) -> set[str]:
        """The groups a host is in, with all their ancestors."""
        own = {g.name for g in self.groups.values() if host in g.hosts}
        return {"all", *own, *(a for g in own for a in self._ancestors(g, parents))}

    def hosts_of(self, name: str) -> list[str]:
        """The hosts of a group and of its descendants, each once, the group's own first."""
        out: list[str] = []
        seen: set[str] = set()
        todo = [name]
        while todo:
            g = self.groups[todo.pop(0)]
            if g.name in seen:
                continue
            seen.add(g.name)
            out += [h for h in g.hosts if h not in out]
            todo += g.children
        return out

    def variables(self, host: str) -> dict[str, Any]:
        """The host's variables as Ansible combines them: the vars of every group it is in
        (ancestors included), sorted by depth, then ``ansible_group_priority``, then name,
        later ones winning; the host's own over all of them."""
        depth = self.depths()
        mine = self.host_groups.get(host) or self._groups_of(host, self.parents())
        merged: dict[str, Any] = {}
        for name in sorted(mine, key=lambda n: (depth[n], self.groups[n].priority, n)):
            merged.update(self.groups[name].vars)
        merged.update(self.host_vars.get(host, {}))
        return merged

    def etcd_hosts(self, missing: str) -> list[ImportedHost]:
        if "etcd" not in self.groups:
            raise UsageError(f"{self.source}: {missing}")
        self.reconcile()
        names = self.hosts_of("etcd")
        if not names:
            raise UsageError(f"{self.source}: the etcd group has no hosts (as Ansible reads "
                             "the file: a host line after '#' is a comment)")
        return [_host_vars(h, self.variables(h), self.source) for h in names]


# --------------------------------------------------------------------------- host patterns

# A range as parse_address accepts it in a host name: [a:z] (one letter each) or [0:9]
# with an optional :step (addresses.py, alphanumeric_range).
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_NUM_RANGE = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]"
_HEX_RANGE = r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.I)
_OCTET = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUM_RANGE})"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}", re.I)
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")


def _is_ipv6(address: str) -> bool:
    """An IPv6 address, a component of which may be a range (addresses.py, ipv6)."""
    import ipaddress

    plain = re.sub(_HEX_RANGE, "0", address, flags=re.I)
    try:
        ipaddress.IPv6Address(plain)
    except ValueError:
        return False
    return True


def split_port(pattern: str) -> tuple[str, int | None]:
    """``parse_address(pattern, allow_ranges=True)`` as Ansible's inventory uses it: the host
    part and the port (``host:22``, ``[host]:22``, ``[fe80::1]:22``); a pattern that is not
    a host name or address is kept whole, without a port."""
    address, port = pattern, None
    for regex in (_BRACKETED_PORT, _HOST_PORT):  # both are tried, in this order
        m = regex.fullmatch(address)
        if m:
            address, port = m.group(1), int(m.group(2))
    if _IPV4.fullmatch(address) or _is_ipv6(address) or _HOSTNAME.fullmatch(address):
        return address, port
    return pattern, None


def expand_range(pattern: str, source: str = "inventory") -> list[str]:
    """Every host name of a pattern with ``[begin:end]`` or ``[begin:end:step]`` ranges, as
    Ansible's ``expand_hostname_range`` gives them: numeric (``[1:3]``; ``[01:10]`` keeps the
    zero padding, and then both bounds must have the same length), alphabetic (letters of
    ``a-zA-Z`` between the two), an empty begin meaning 0, several ranges in one name."""
    if "[" not in pattern:
        return [pattern]
    out: list[str] = []
    for name in _expand_first(pattern, source):
        out += expand_range(name, source) if "[" in name else [name]
        if len(out) > MAX_HOSTS:
            raise UsageError(f"{source}: host pattern {pattern!r} gives more than {MAX_HOSTS} "
                             "hosts")
    return out


def _expand_first(pattern: str, source: str) -> Iterator[str]:
    bad = f"{source}: host pattern {pattern!r}"
    parts = pattern.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise UsageError(f"{bad}: a range is [begin:end] or [begin:end:step]")
    head, inner, tail = parts
    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise UsageError(f"{bad}: a range is [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise UsageError(f"{bad}: a range needs an end")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and width != len(end):
        raise UsageError(f"{bad}: a zero-padded range needs begin and end of the same length")
    try:
        step = int(step_text)
    except ValueError:
        raise UsageError(f"{bad}: the step {step_text!r} is not a number") from None
    if step == 0:
        raise UsageError(f"{bad}: the step cannot be 0")
    letters = string.ascii_letters
    if begin in letters and end in letters:  # a substring, as Ansible's str.index finds it
        i, j = letters.index(begin), letters.index(end)
        if i > j:
            raise UsageError(f"{bad}: a range needs begin <= end")
        seq: list[str] = list(letters[i:j + 1:step])
    else:
        try:
            lo, hi = int(begin), int(end)
        except ValueError:
            raise UsageError(f"{bad}: {begin!r}:{end!r} is neither a numeric nor an "
                             "alphabetic range") from None
        if (hi - lo) // step > MAX_HOSTS:
            raise UsageError(f"{bad}: gives more than {MAX_HOSTS} hosts")
        seq = [str(x).zfill(width) for x in range(lo, hi + 1, step)]
    for x in seq:
        yield f"{head}{x}{tail}"


# --------------------------------------------------------------------------- INI

_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")


def ini_value(text: str, where: str) -> Any:
    """A value as Ansible's INI parser reads it: a Python literal when it is one ("ubuntu"
    and 'ubuntu' are ubuntu, 22 is a number, [1, 2] a list), else the text as written."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        return text
    except (MemoryError, RecursionError):
        raise UsageError(f"{where}: value {text[:40]!r}... is nested too deeply") from None


def parse_ansible_ini(text: str, source: str) -> list[ImportedHost]:
    """An Ansible INI inventory, as ansible-core's ini plugin reads it (see the module
    docstring): ``[group]`` hosts, ``[group:vars]`` one ``key=value`` a line,
    ``[group:children]`` group names; a ``:children`` group declared later is waited for, and
    one never declared is an error, as is ``[group:vars]`` of a group never declared."""
    inv = _Ansible(source)
    pending: dict[str, tuple[int, str, list[str]]] = {}   # group -> (line, state, parents)
    group, state = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source}: line {n}"
        if not line or line[0] in "#;":
            continue
        m = _SECTION.fullmatch(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise UsageError(f"{where}: section [{group}:{state}] has an unknown type "
                                 "(hosts, children or vars)")
            if group not in inv.groups:
                if state == "vars" and group not in pending:
                    pending[group] = (n, state, [])
                inv.group(group)
            if group in pending and state != "vars":
                _declared(inv, group, pending)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise UsageError(f"{where}: {line!r} is not an Ansible INI section (no spaces "
                             "inside the brackets)")
        if state == "hosts":
            _host_line(inv, line, group, where)
        elif state == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise UsageError(f"{where}: expected key=value in [{group}:vars], got "
                                 f"{line!r}")
            inv.set_group_var(group, key.strip(), ini_value(value.strip(), where), where)
        else:
            g = _GROUP_NAME.fullmatch(line)
            if not g:
                raise UsageError(f"{where}: expected a group name in [{group}:children], got "
                                 f"{line!r}")
            child = g.group(1)
            if child in inv.groups:
                inv.add_child(group, child)
            elif child in pending:
                pending[child][2].append(group)
            else:
                pending[child] = (n, "children", [group])
    for name, (n, kind, parents) in pending.items():
        if kind == "vars":
            raise UsageError(f"{source}: line {n}: section [{name}:vars] is for a group that "
                             "is not declared anywhere")
        raise UsageError(f"{source}: line {n}: section [{parents[-1]}:children] names group "
                         f"{name!r}, which is not declared anywhere")
    return inv.etcd_hosts("no [etcd] group in this Ansible inventory")


def _declared(inv: _Ansible, group: str, pending: dict[str, tuple[int, str, list[str]]]
              ) -> None:
    """A group that was waited for is declared: link it to the parents that named it (and
    theirs, when they were waited for too)."""
    _, kind, parents = pending.pop(group)
    if kind != "children":
        return
    for parent in parents:
        inv.add_child(parent, group)
        if parent in pending and pending[parent][1] == "children":
            _declared(inv, parent, pending)


def _host_line(inv: _Ansible, line: str, group: str, where: str) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise UsageError(f"{where}: cannot split the host line ({exc}): {line!r}") from None
    if not tokens:
        return
    pattern, port = split_port(tokens[0])
    if tokens[0].strip().endswith(":") and port is None:
        raise UsageError(f"{where}: host pattern {tokens[0]!r} ends in ':', which is kept "
                         "for a port")
    if pattern.startswith("[") and "]" not in pattern:
        raise UsageError(f"{where}: {line!r} is not an Ansible INI section, nor a host")
    variables: dict[str, Any] = {}
    for t in tokens[1:]:
        key, sep, value = t.partition("=")
        if not sep:
            raise UsageError(f"{where}: expected key=value after the host, got {t!r}")
        variables[key] = ini_value(value, where)
    for host in expand_range(pattern, where):
        if host.strip() == "---":
            raise UsageError(f"{where}: host '---': this looks like a YAML file (name it "
                             ".yaml or .yml)")
        inv.add_host(host, group, port)
        inv.host_vars[host].update(variables)


# --------------------------------------------------------------------------- YAML

def parse_ansible_yaml(data: Any, source: str) -> list[ImportedHost]:
    """An Ansible YAML inventory, as ansible-core's yaml plugin reads it: top-level keys are
    groups (usually just ``all``), each with ``hosts`` (host patterns, ranges expanded, and
    their variables), ``vars`` and ``children`` (groups, recursively)."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: not an Ansible inventory (a mapping of groups)")
    inv = _Ansible(source)

    def walk(name: Any, g: Any, depth: int) -> str:
        if depth > 100:
            raise UsageError(f"{source}: groups nested more than 100 deep")
        group = str(name)
        inv.group(group)
        if not isinstance(g, dict):
            return group
        for section in ("vars", "children", "hosts"):
            if isinstance(g.get(section), str):
                g = {**g, section: {g[section]: None}}
            if not isinstance(g.get(section), dict | None):
                raise UsageError(f"{source}: group {group!r}: {section!r} must be a mapping")
        for key, value in (g.get("vars") or {}).items():
            inv.set_group_var(group, str(key), value, source)
        for child, cg in (g.get("children") or {}).items():
            inv.add_child(group, walk(child, cg, depth + 1))
        for pattern, hv in (g.get("hosts") or {}).items():
            if not isinstance(pattern, str):
                raise UsageError(f"{source}: host {pattern!r} of group {group!r} must be a "
                                 "string (quote a number)")
            if hv is not None and not isinstance(hv, dict):
                raise UsageError(f"{source}: host {pattern!r} of group {group!r}: its "
                                 "variables must be a mapping")
            host, port = split_port(pattern)
            for h in expand_range(host, source):
                inv.add_host(h, group, port)
                inv.host_vars[h].update({str(k): v for k, v in (hv or {}).items()})
        return group

    for name, g in data.items():
        walk(name, g, 0)
    return inv.etcd_hosts("no 'etcd' group in this Ansible inventory")
