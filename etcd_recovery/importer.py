"""inventory import: the hosts from the formats people already keep. Pure: text in, hosts out.

- a kubespray / Ansible inventory, YAML or INI: the hosts of the ``etcd`` group, with
  ``ansible_host``, ``ansible_user``, ``ansible_port``, ``ansible_ssh_private_key_file`` and
  ``etcd_member_name`` (host and group variables, and ``all``'s);
- the ``hosts.json`` of vmware/etcd-recovery: a list (or ``{"hosts": [...]}``) of objects
  with ``name``, ``member_name``, ``host``, ``username``, ``private_key``.

What the source says about SSH is kept; the etcd side (URLs, data dirs, runtime) is read from
the hosts by ``discover``, or stated as missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import UsageError


@dataclass(frozen=True)
class ImportedHost:
    address: str
    member_name: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None


def parse_source(text: str, source: str) -> list[ImportedHost]:
    """Guess the format from the text and read the etcd hosts out of it."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if data is not None:
            return parse_vmware(data, source)
    first = next((ln.strip() for ln in text.splitlines()
                  if ln.strip() and not ln.strip().startswith(("#", ";"))), "")
    if first.startswith("["):
        return parse_ansible_ini(text, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: neither JSON, Ansible INI nor YAML: {exc}") from exc
    return parse_ansible_yaml(data, source)


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


def parse_ansible_yaml(data: Any, source: str) -> list[ImportedHost]:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: not an Ansible inventory (a mapping of groups)")
    root = data.get("all", data) if isinstance(data.get("all"), dict) else data
    all_vars = dict(root.get("vars") or {}) if isinstance(root, dict) else {}
    host_vars: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}

    def walk(group: str, g: Any) -> None:
        if not isinstance(g, dict):
            return
        groups[group] = g
        for h, hv in (g.get("hosts") or {}).items():
            host_vars.setdefault(str(h), {}).update(hv or {})
        for child, cg in (g.get("children") or {}).items():
            walk(str(child), cg)

    walk("all", root)
    for name, g in data.items():
        if name != "all":
            walk(str(name), g)
    etcd = groups.get("etcd")
    if etcd is None:
        raise UsageError(f"{source}: no 'etcd' group in this Ansible inventory")
    names = _group_hosts(etcd, groups)
    gvars = dict(etcd.get("vars") or {})
    return [_host_vars(h, {**all_vars, **gvars, **host_vars.get(h, {})}, source)
            for h in names]


def _group_hosts(g: dict[str, Any], groups: dict[str, dict[str, Any]]) -> list[str]:
    out = [str(h) for h in (g.get("hosts") or {})]
    for child in g.get("children") or {}:
        for h in _group_hosts(groups.get(str(child), {}), groups):
            if h not in out:
                out.append(h)
    return out


def parse_ansible_ini(text: str, source: str) -> list[ImportedHost]:
    host_vars: dict[str, dict[str, str]] = {}
    group_hosts: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    gvars: dict[str, dict[str, str]] = {}
    section = "ungrouped"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise UsageError(f"{source}: line {n}: not an Ansible INI section: {line!r}")
            section = line[1:-1].strip()
            continue
        name, _, kind = section.partition(":")
        words = line.split()
        if kind == "vars":
            key, sep, value = line.partition("=")
            if sep:
                gvars.setdefault(name, {})[key.strip()] = value.strip()
        elif kind == "children":
            children.setdefault(name, []).append(words[0])
        else:
            group_hosts.setdefault(name, []).append(words[0])
            host_vars.setdefault(words[0], {}).update(
                dict(w.split("=", 1) for w in words[1:] if "=" in w))

    def hosts_of(group: str) -> list[str]:
        out = list(group_hosts.get(group, []))
        for child in children.get(group, []):
            out += [h for h in hosts_of(child) if h not in out]
        return out

    if "etcd" not in group_hosts and "etcd" not in children:
        raise UsageError(f"{source}: no [etcd] group in this Ansible inventory")
    base = {**gvars.get("all", {}), **gvars.get("etcd", {})}
    return [_host_vars(h, {**base, **host_vars.get(h, {})}, source) for h in hosts_of("etcd")]
