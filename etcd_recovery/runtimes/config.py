"""etcd's settings as the two supported runtimes keep them: read the flags, rewrite them.

* ``static-pod`` (kubeadm): a Pod manifest such as ``/etc/kubernetes/manifests/etcd.yaml``
  whose container named ``etcd`` runs ``command: [etcd, --flag=value, ...]`` (plus ``args``).
* ``systemd`` (kubespray, bare metal): an ``EnvironmentFile=`` such as ``/etc/etcd/etcd.env``
  with one ``ETCD_FLAG_NAME=value`` line per flag; etcd maps ``--some-flag`` to
  ``ETCD_SOME_FLAG`` itself.

Everything here is pure: text in, text out, no I/O. Rewrites are textual: only the lines of the
flags being set or removed change, and everything else (comments, order, quoting, other fields)
stays byte-identical, so a plan can show an exact diff. Each rewrite is read back and checked
before it is returned.

Whatever cannot be read or edited without guessing raises :class:`FormatError` naming the file
and the byte offset of the offending line. Bad arguments from the caller (a flag name that is
not one, a value with a newline) raise :class:`UsageError`.

Facts about etcd that shape the rules here:

* etcd parses flags with Go's ``flag`` package: ``-x`` and ``--x`` are the same flag, a bare
  boolean ``--x`` means ``true``, and parsing stops at the first argument that is not a flag
  (etcd then refuses to start), so such an argument is an error here too.
* A flag given twice silently takes the last value; this module refuses to guess which one the
  operator meant and reports both.
* etcd reads ``ETCD_*`` variables only for flags *not* on the command line, and exits at start
  if a variable shadows a command-line flag ("conflicting environment variable is shadowed by
  corresponding command-line flag"). An *empty* ``ETCD_X=`` counts as unset.
* systemd's ``EnvironmentFile=`` drops ``export ETCD_X=...`` lines (``export ETCD_X`` is not a
  valid variable name), while a shell that sources the file honours them. They are read here as
  the file's intent; a caller that knows the file is used only by systemd should know they have
  no effect there.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from ..errors import FormatError, UsageError

FLAG_FORCE_NEW_CLUSTER = "force-new-cluster"
# The forced start's raft timing: a heartbeat of 10 ms and an election timeout of 100 ms (etcd
# takes any election timeout of at least 5 heartbeats: embed/config.go, Validate, at v3.5.35
# and v3.7.3). A member forced into a new cluster starts with its old membership (from its
# backend) and drops the others only as it replays its WAL, so etcd takes it for a
# multi-member cluster and does not fast-forward its election ticks (etcdserver/server.go,
# adjustTicks, at v3.5.35): it waits out a whole randomized election timeout before it leads
# alone, 1-2 s with the default 1000 ms (measured 1.9 s on the lab). With these it leads in
# 100-200 ms. They are set for the forced start only: the member's own configuration, timing
# included, comes back with the restart (or restore) that follows.
FORCED_TIMING = {"heartbeat-interval": "10", "election-timeout": "100"}

STATIC_POD = "static-pod"
SYSTEMD = "systemd"
RUNTIMES = (STATIC_POD, SYSTEMD)

ETCD_CONTAINER = "etcd"
ENV_PREFIX = "ETCD_"

# A flag name as Go's flag package would take it from the command line (and etcd's are all
# lower-case words joined by dashes).
_FLAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Names that map one-to-one onto ETCD_* variables and back.
_ENV_FLAG_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_ENV_FLAG_KEY = re.compile(r"ETCD_[A-Z0-9][A-Z0-9_]*")
# Characters a flag value may not hold: control characters (newlines, tabs, NUL), line and
# paragraph separators, a byte-order mark, lone surrogates and what YAML cannot print.
_BAD_VALUE_CHAR = re.compile(
    "[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]")
_LONE_CR = re.compile(r"\r(?!\n)")

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"

Edit = tuple[int, int, str]  # replace text[start:end] with the string


# ------------------------------------------------------------------------------ shared helpers

def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, max(0, index)) + 1


def _byte_offset(text: str, index: int) -> int:
    """Byte offset (UTF-8) of the start of the line that holds character ``index``."""
    return len(text[:_line_start(text, index)].encode("utf-8", "surrogatepass"))


def _error(file: str, text: str, index: int, message: str) -> FormatError:
    return FormatError(file, _byte_offset(text, index), message)


def _line_no(text: str, index: int) -> int:
    return text.count("\n", 0, max(0, index)) + 1


def _content_end(text: str, index: int) -> int:
    """Index where the line holding ``index`` ends, before its ``\\n`` or ``\\r\\n``."""
    nl = text.find("\n", index)
    if nl < 0:
        return len(text)
    return nl - 1 if nl > index and text[nl - 1] == "\r" else nl


def _delete_line(text: str, line_start: int) -> Edit:
    """The edit that removes the line starting at ``line_start`` with its line break.

    The last line of a file without a final newline takes the previous line's break with it,
    so that appending a line and removing it again gives back the same bytes.
    """
    nl = text.find("\n", line_start)
    if nl >= 0:
        return (line_start, nl + 1, "")
    if line_start == 0:
        return (0, len(text), "")
    cut = line_start - 1
    if cut > 0 and text[cut - 1] == "\r":
        cut -= 1
    return (cut, len(text), "")


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _apply(text: str, edits: list[Edit]) -> str:
    ordered = sorted(edits, key=lambda e: (e[0], e[1]))
    for (_, end, _), (start, _, _) in zip(ordered, ordered[1:], strict=False):
        if start < end:
            raise AssertionError("overlapping edits")  # a bug here, never the file's fault
    for start, end, new in reversed(ordered):
        text = text[:start] + new + text[end:]
    return text


def _check_request(file: str, set_: Mapping[str, str], remove: Iterable[str],
                   name_re: re.Pattern[str], empty_ok: bool) -> tuple[dict[str, str], set[str]]:
    wanted = dict(set_)
    gone = set(remove)
    for name in [*wanted, *sorted(gone, key=str)]:
        if not isinstance(name, str) or not name_re.fullmatch(name):
            raise UsageError(f"{file}: {name!r} is not a flag name (give it without dashes, "
                             f"like {FLAG_FORCE_NEW_CLUSTER!r})")
    both = sorted(gone & wanted.keys())
    if both:
        raise UsageError(f"{file}: flag --{both[0]} is both set and removed")
    for name, value in wanted.items():
        if not isinstance(value, str):
            raise UsageError(f"{file}: value for --{name} must be a string, not "
                             f"{type(value).__name__}")
        bad = _BAD_VALUE_CHAR.search(value)
        if bad:
            raise UsageError(f"{file}: value for --{name} holds {bad.group()!r} at position "
                             f"{bad.start()}; flag values must be one printable line")
        if not value and not empty_ok:
            raise UsageError(f"{file}: empty value for --{name}: etcd ignores an empty ETCD_ "
                             f"variable; remove the flag instead")
    return wanted, gone


def _expected(old: Mapping[str, str], wanted: Mapping[str, str],
              gone: set[str]) -> dict[str, str]:
    result = {k: v for k, v in old.items() if k not in gone}
    result.update(wanted)
    return result


def _check_result(file: str, got: Mapping[str, str], want: Mapping[str, str]) -> None:
    if dict(got) != dict(want):
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise FormatError(file, 0, f"the rewritten file does not read back as intended "
                                   f"(differs in {diff[:3]}); nothing was changed")


# ------------------------------------------------------------------------- static-pod manifest

@dataclass(frozen=True)
class _Item:
    """One string in the etcd container's command or args, where it sits in the text."""

    value: str
    style: str | None  # None (plain), "'" or '"'; block styles are refused
    start: int  # character index where the scalar (with its quotes) starts
    end: int  # ... and ends
    multiline: bool


@dataclass(frozen=True)
class _Flag:
    name: str
    value: str
    dashes: str  # "-" or "--"
    bare: bool  # "--x" without "=value"
    item: _Item


@dataclass(frozen=True)
class _Pod:
    root: yaml.Node
    command: yaml.SequenceNode
    args: yaml.SequenceNode | None
    items: tuple[_Item, ...]  # command then args, as the kubelet joins them
    flags: tuple[_Flag, ...]
    env_names: frozenset[str]
    image: str | None
    image_node: yaml.ScalarNode | None = None


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        index = mark.index if mark else 0
        raise _error(file, text, index,
                     f"not valid YAML: {exc.problem or exc.context}{where}") from exc
    except yaml.reader.ReaderError as exc:
        raise _error(file, text, exc.position,
                     f"not valid YAML: character {exc.character!r} is not allowed") from exc
    except yaml.YAMLError as exc:
        raise FormatError(file, 0, f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise FormatError(file, 0, "not valid YAML: nested too deeply") from exc


def _get(node: yaml.MappingNode, key: str, file: str, text: str) -> yaml.Node | None:
    found: yaml.Node | None = None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.tag == _MERGE_TAG:
            raise _error(file, text, k.start_mark.index,
                         "merge keys (<<) are not supported in a Pod manifest")
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            if found is not None:
                raise _error(file, text, k.start_mark.index,
                             f"key {key!r} appears twice in one mapping")
            found = v
    return found


def _mapping(node: yaml.Node | None, what: str, file: str, text: str,
             at: int) -> yaml.MappingNode:
    if not isinstance(node, yaml.MappingNode):
        index = node.start_mark.index if node is not None else at
        raise _error(file, text, index, f"{what} is not a mapping")
    return node


def _strings(node: yaml.Node, what: str, file: str, text: str) -> list[_Item]:
    if not isinstance(node, yaml.SequenceNode):
        raise _error(file, text, node.start_mark.index,
                     f"{what} of container {ETCD_CONTAINER!r} is not a list")
    items = []
    for sub in node.value:
        index = sub.start_mark.index
        if not isinstance(sub, yaml.ScalarNode) or sub.tag != _STR_TAG:
            raise _error(file, text, index,
                         f"an item of {what} of container {ETCD_CONTAINER!r} is not a string")
        start, end = sub.start_mark.index, sub.end_mark.index
        items.append(_Item(value=sub.value, style=sub.style, start=start, end=end,
                           multiline="\n" in text[start:end] or "\r" in text[start:end]))
    return items


def _parse_flag(item: _Item, file: str, text: str) -> _Flag:
    s = item.value
    hint = ("etcd takes no arguments besides flags; write a flag's value as --name=value "
            "in one item")
    if s == "--":
        raise _error(file, text, item.start, f"'--' ends etcd's flags; {hint}")
    if not s.startswith("-"):
        raise _error(file, text, item.start, f"{s!r} is not a flag; {hint}")
    dashes = "--" if s.startswith("--") else "-"
    name, eq, value = s[len(dashes):].partition("=")
    if not _FLAG_NAME.fullmatch(name):
        raise _error(file, text, item.start, f"{s!r} is not a flag etcd could parse")
    return _Flag(name=name, value=value if eq else "true", dashes=dashes, bare=not eq,
                 item=item)


def _parse_pod(text: str, file: str) -> _Pod:
    root = _compose(text, file)
    if root is None:
        raise FormatError(file, 0, "empty file; expected a Pod manifest")
    top = _mapping(root, "the document", file, text, 0)
    kind = _get(top, "kind", file, text)
    if not isinstance(kind, yaml.ScalarNode) or kind.value != "Pod":
        index = kind.start_mark.index if kind is not None else 0
        shown = kind.value if isinstance(kind, yaml.ScalarNode) else None
        raise _error(file, text, index, f"kind is {shown!r}, expected 'Pod'")
    spec = _mapping(_get(top, "spec", file, text), "spec", file, text, 0)
    containers = _get(spec, "containers", file, text)
    if not isinstance(containers, yaml.SequenceNode):
        index = containers.start_mark.index if containers is not None else spec.start_mark.index
        raise _error(file, text, index, "spec.containers is missing or not a list")
    found: list[yaml.MappingNode] = []
    for c in containers.value:
        if isinstance(c, yaml.MappingNode):
            name = _get(c, "name", file, text)
            if isinstance(name, yaml.ScalarNode) and name.value == ETCD_CONTAINER:
                found.append(c)
    if not found:
        raise _error(file, text, containers.start_mark.index,
                     f"no container named {ETCD_CONTAINER!r} in spec.containers")
    if len(found) > 1:
        raise _error(file, text, found[1].start_mark.index,
                     f"two containers are named {ETCD_CONTAINER!r}")
    container = found[0]
    command = _get(container, "command", file, text)
    if command is None:
        raise _error(file, text, container.start_mark.index,
                     f"container {ETCD_CONTAINER!r} has no command; refusing to guess the "
                     f"image's entrypoint")
    items = _strings(command, "the command", file, text)
    assert isinstance(command, yaml.SequenceNode)
    if not items:
        raise _error(file, text, command.start_mark.index,
                     f"the command of container {ETCD_CONTAINER!r} is empty")
    program = items[0].value
    if program.rsplit("/", 1)[-1] != "etcd":
        raise _error(file, text, items[0].start,
                     f"container {ETCD_CONTAINER!r} runs {program!r}, not etcd; refusing to "
                     f"guess how it passes flags")
    args_node = _get(container, "args", file, text)
    args: yaml.SequenceNode | None = None
    if args_node is not None and not (isinstance(args_node, yaml.ScalarNode)
                                      and args_node.tag == _NULL_TAG):
        items += _strings(args_node, "args", file, text)
        assert isinstance(args_node, yaml.SequenceNode)
        args = args_node
    flags = [_parse_flag(item, file, text) for item in items[1:]]
    seen: dict[str, _Flag] = {}
    for f in flags:
        if f.name in seen:
            first = _line_no(text, seen[f.name].item.start)
            raise _error(file, text, f.item.start,
                         f"flag --{f.name} is given twice (lines {first} and "
                         f"{_line_no(text, f.item.start)}); etcd would take the last one, "
                         f"refusing to guess which is meant")
        seen[f.name] = f
    env_names: set[str] = set()
    env = _get(container, "env", file, text)
    if isinstance(env, yaml.SequenceNode):
        for e in env.value:
            if isinstance(e, yaml.MappingNode):
                n = _get(e, "name", file, text)
                if isinstance(n, yaml.ScalarNode):
                    env_names.add(str(n.value))
    image = _get(container, "image", file, text)
    image_value = (str(image.value) if isinstance(image, yaml.ScalarNode)
                   and image.tag != _NULL_TAG else None)
    return _Pod(root=root, command=command, args=args, items=tuple(items), flags=tuple(flags),
                env_names=frozenset(env_names), image=image_value,
                image_node=image if isinstance(image, yaml.ScalarNode)
                and image_value is not None else None)


def manifest_flags(text: str, file: str) -> dict[str, str]:
    """etcd's flags from a static-pod manifest: name (without dashes) -> value.

    Read from the ``command`` (after ``etcd``) and ``args`` of the container named ``etcd``,
    in order. A bare ``--flag`` reads as ``"true"``, as Go's flag package takes it.
    """
    return {f.name: f.value for f in _parse_pod(text, file).flags}


def manifest_image(text: str, file: str) -> str | None:
    """The image of the container named ``etcd`` (None when the manifest gives none)."""
    return _parse_pod(text, file).image


def _plain_ok(s: str) -> bool:
    """Whether ``s`` written bare as a block-list item reads back as the same string."""
    if not s or s != s.strip():
        return False
    try:
        node = yaml.compose("- " + s + "\n", Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return False
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != 1:
        return False
    item = node.value[0]
    return (isinstance(item, yaml.ScalarNode) and item.style is None and item.tag == _STR_TAG
            and item.value == s)


def _yaml_scalar(s: str, style: str | None) -> str:
    if style == "'":
        return "'" + s.replace("'", "''") + "'"
    if style is None and _plain_ok(s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ITEM_PREFIX = re.compile(r" *-[ \t]+")
_ITEM_SUFFIX = re.compile(r"[ \t]*(#.*)?")
_ODD_BREAK = re.compile("\r(?!\n)|[\x85\u2028\u2029]")


def _check_editable(pod: _Pod, text: str, file: str) -> None:
    if pod.command.flow_style:
        raise _error(file, text, pod.command.start_mark.index,
                     "the etcd command is written in flow style ([...]); refusing to rewrite "
                     "it, write it as a block list (one '- item' per line)")
    if pod.args is not None and pod.args.flow_style and pod.args.value:
        raise _error(file, text, pod.args.start_mark.index,
                     "the etcd args are written in flow style ([...]); refusing to rewrite "
                     "them, write them as a block list (one '- item' per line)")
    odd = _ODD_BREAK.search(text)
    if odd:
        raise _error(file, text, odd.start(), f"an unusual line break {odd.group()!r}; refusing "
                                              f"to rewrite a file whose lines are ambiguous")
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.NodeEvent) and (isinstance(event, yaml.AliasEvent)
                                                  or event.anchor is not None):
            index = event.start_mark.index if event.start_mark is not None else 0
            raise _error(file, text, index,
                         "anchors and aliases (&, *) are not supported; refusing to rewrite "
                         "a manifest whose parts may be shared")
    for item in pod.items:
        start = _line_start(text, item.start)
        if item.multiline or item.style not in (None, "'", '"'):
            raise _error(file, text, item.start,
                         f"item {item.value!r} spans several lines; refusing to rewrite it")
        source = text[item.start:item.end]
        if (source[:1] != item.style) if item.style else (source != item.value):
            raise _error(file, text, item.start,
                         f"item {item.value!r} carries a tag; refusing to rewrite it")
        if not _ITEM_PREFIX.fullmatch(text, start, item.start):
            raise _error(file, text, item.start,
                         f"item {item.value!r} is not on a line of its own as '- item'; "
                         f"refusing to rewrite it")
        if not _ITEM_SUFFIX.fullmatch(text, item.end, _content_end(text, item.end)):
            raise _error(file, text, item.start,
                         f"item {item.value!r} is followed by more than a comment on its line; "
                         f"refusing to rewrite it")


def _without_argv(doc: object) -> object:
    """The loaded manifest minus the etcd container's command and args."""
    if isinstance(doc, dict):
        for c in (doc.get("spec") or {}).get("containers") or []:
            if isinstance(c, dict) and c.get("name") == ETCD_CONTAINER:
                program = (c.get("command") or [None])[0]
                c.pop("command", None)
                c.pop("args", None)
                c["__program__"] = program
    return doc


def _load(text: str, file: str) -> object:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise FormatError(file, 0, f"not valid YAML: {exc}") from exc


def manifest_with_flags(text: str, file: str, set_: Mapping[str, str],
                        remove: Iterable[str]) -> str:
    """The manifest with flags set (replaced in place or appended) and removed.

    Only the affected ``- --flag=value`` lines change: an existing flag keeps its line, its
    dashes, its quoting style and any trailing comment; new flags go right after the last item
    of the etcd command (or args), with the same indentation and the quoting of the last flag;
    removed flags lose their whole line. Flags that already have the wanted value are left as
    they are. The result is read back and compared before it is returned.
    """
    wanted, gone = _check_request(file, set_, remove, _FLAG_NAME, empty_ok=True)
    pod = _parse_pod(text, file)
    _check_editable(pod, text, file)
    for name in sorted(wanted.keys() | gone):
        var = env_var(name)
        if var in pod.env_names:
            raise FormatError(file, 0, f"container {ETCD_CONTAINER!r} also sets {var} in its "
                                       f"env; etcd refuses to start when a variable shadows "
                                       f"--{name}, and removing the flag would let the "
                                       f"variable act. Remove {var} first")
    current = {f.name: f for f in pod.flags}
    deletions: dict[int, Edit] = {}  # by the start of the item
    for name in gone:
        if name in current:
            item = current[name].item
            deletions[item.start] = _delete_line(text, _line_start(text, item.start))
    edits: list[Edit] = []
    new_lines: list[str] = []
    last = pod.items[-1]
    style = pod.flags[-1].item.style if pod.flags else None
    last_line = _line_start(text, last.start)
    prefix = text[last_line:last.start]
    for name, value in wanted.items():
        f = current.get(name)
        if f is None:
            new_lines.append(prefix + _yaml_scalar(f"--{name}={value}", style))
        elif f.value != value or (f.bare and value != "true"):
            edits.append((f.item.start, f.item.end,
                          _yaml_scalar(f"{f.dashes}{name}={value}", f.item.style)))
    if new_lines:
        eol = _eol(text)
        end = _content_end(text, last.end)
        if deletions.pop(last.start, None) is not None:
            # The last item goes away: its line becomes the new flags' lines.
            edits.append((last_line, end, eol.join(new_lines)))
        else:
            edits.append((end, end, "".join(eol + line for line in new_lines)))
    result = _apply(text, [*edits, *deletions.values()])
    _check_result(file, manifest_flags(result, file),
                  _expected({f.name: f.value for f in pod.flags}, wanted, gone))
    if _without_argv(_load(result, file)) != _without_argv(_load(text, file)):
        raise FormatError(file, 0, "the rewrite would change more than etcd's flags; "
                                   "nothing was changed")
    return result


def manifest_with_image(text: str, file: str, new_image: str) -> str:
    """The manifest with the etcd container's image replaced in place (only that value
    changes; its quoting style is kept where the new value allows it)."""
    if not new_image or new_image != new_image.strip() or "\n" in new_image:
        raise UsageError(f"image {new_image!r} is not a valid image reference")
    pod = _parse_pod(text, file)
    node = pod.image_node
    if node is None or not isinstance(node, yaml.ScalarNode):
        raise FormatError(file, 0, f"container {ETCD_CONTAINER!r} names no image to replace")
    start, end = node.start_mark.index, node.end_mark.index
    if node.style not in (None, "'", '"') or "\n" in text[start:end]:
        raise _error(file, text, start, "the image is not written on one line as a plain or "
                                        "quoted string; refusing to rewrite it")
    if pod.image == new_image:
        return text
    result = _apply(text, [(start, end, _yaml_scalar(new_image, node.style))])
    if manifest_image(result, file) != new_image:
        raise FormatError(file, 0, "the image could not be rewritten in place; nothing was "
                                   "changed")

    def without_image(doc: object) -> object:
        for c in (doc.get("spec") or {}).get("containers") or [] \
                if isinstance(doc, dict) else []:
            if isinstance(c, dict) and c.get("name") == ETCD_CONTAINER:
                c.pop("image", None)
        return doc

    if without_image(_load(result, file)) != without_image(_load(text, file)):
        raise FormatError(file, 0, "the rewrite would change more than the image; nothing "
                                   "was changed")
    return result


# ------------------------------------------------------------------------ systemd environment

@dataclass(frozen=True)
class _EnvLine:
    start: int  # character index of the line's start
    end: int  # ... of its end, before the line break
    key: str | None  # None for blank lines and comments
    head: str  # the text up to and including "=" and the blanks after it
    value: str
    style: str | None  # None (bare), "'" or '"'
    export: bool


_ENV_ASSIGN = re.compile(
    r"(?P<head>[ \t]*(?P<export>export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*)"
    r"(?P<rest>.*)", re.S)
_ENV_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_SHELL_ESCAPED = '"\\`$'


def _env_value(rest: str) -> tuple[str, str | None]:
    """A value after ``=`` as systemd reads it; ValueError(message) for what is not taken."""
    s = rest.lstrip(" \t")
    if s.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(s):
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s):
                    raise ValueError("a backslash at the end of the line continues the value "
                                     "on the next line; not supported")
                if s[i + 1] not in _SHELL_ESCAPED:
                    raise ValueError(f"backslash before {s[i + 1]!r} inside double quotes: "
                                     f"systemd versions disagree on what it means")
                out.append(s[i + 1])
                i += 2
                continue
            if c == '"':
                if s[i + 1:].strip(" \t"):
                    raise ValueError("text after the closing quote")
                return "".join(out), '"'
            out.append(c)
            i += 1
        raise ValueError("unterminated double quote (values spanning lines are not supported)")
    if s.startswith("'"):
        end = s.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote (values spanning lines are not "
                             "supported)")
        body = s[1:end]
        if "\\" in body:
            raise ValueError("backslash inside single quotes: systemd versions disagree on "
                             "what it means")
        if s[end + 1:].strip(" \t"):
            raise ValueError("text after the closing quote")
        return body, "'"
    if "\\" in s:
        raise ValueError("backslash in an unquoted value (an escape or a line continuation); "
                         "not supported")
    value = s.rstrip(" \t")
    if '"' in value or "'" in value:
        raise ValueError("a quote inside an unquoted value: systemd keeps it, a shell does "
                         "not; quote the whole value")
    if re.search(r"[ \t]#", value):
        raise ValueError("' #' inside an unquoted value: systemd keeps it as part of the "
                         "value (comments only start lines); quote the whole value or move "
                         "the comment to a line of its own")
    return value, None


def _parse_env(text: str, file: str) -> list[_EnvLine]:
    lone = _LONE_CR.search(text)
    if lone:
        raise _error(file, text, lone.start(), "a carriage return that does not end a line")
    lines: list[_EnvLine] = []
    pos = 0
    while pos < len(text):
        end = _content_end(text, pos)
        line = text[pos:end]
        nxt = text.find("\n", pos)
        nxt = len(text) if nxt < 0 else nxt + 1
        if "\0" in line:
            raise _error(file, text, pos, "a NUL character (systemd stops reading there)")
        stripped = line.strip(" \t")
        if not stripped or stripped[0] in "#;":
            if stripped[:1] in ("#", ";") and stripped.endswith("\\"):
                raise _error(file, text, pos, "a comment ending in a backslash: systemd "
                                              "versions disagree on whether the next line is "
                                              "a comment too")
            lines.append(_EnvLine(pos, end, None, "", "", None, False))
            pos = nxt
            continue
        m = _ENV_ASSIGN.fullmatch(line)
        if m is None:
            what = ("an invalid variable name" if "=" in line else
                    "no '=' (systemd ignores such lines)")
            raise _error(file, text, pos, f"line {_line_no(text, pos)} is not a comment, a "
                                          f"blank line or NAME=value: {what}")
        try:
            value, style = _env_value(m.group("rest"))
        except ValueError as exc:
            raise _error(file, text, pos,
                         f"line {_line_no(text, pos)} ({m.group('key')}): {exc}") from None
        lines.append(_EnvLine(pos, end, m.group("key"), m.group("head"), value, style,
                              m.group("export") is not None))
        pos = nxt
    return lines


def _env_flag_lines(lines: list[_EnvLine], text: str, file: str) -> dict[str, _EnvLine]:
    found: dict[str, _EnvLine] = {}
    for line in lines:
        if line.key is None or not _ENV_FLAG_KEY.fullmatch(line.key):
            continue
        name = line.key[len(ENV_PREFIX):].lower().replace("_", "-")
        if name in found:
            first = _line_no(text, found[name].start)
            raise _error(file, text, line.start,
                         f"{line.key} is set twice (lines {first} and "
                         f"{_line_no(text, line.start)}); the last one would win, refusing to "
                         f"guess which is meant")
        found[name] = line
    return found


def env_flags(text: str, file: str) -> dict[str, str]:
    """etcd's flags from a systemd environment file: name (without dashes) -> value.

    ``ETCD_INITIAL_CLUSTER_STATE=new`` reads as ``{"initial-cluster-state": "new"}``. Other
    variables (``ETCDCTL_API``, ``GOMAXPROCS``...) are not flags and are left out.

    Values are read as systemd's ``EnvironmentFile=`` reads them (blanks around an unquoted
    value dropped, inner ones kept; ``"..."`` with ``\\`` escapes; ``'...'`` literal).
    Refused: values that continue on the next line, escapes that systemd versions read
    differently, lines systemd would silently ignore, and values that look half-quoted or
    carry a would-be trailing comment. An empty value is returned as ``""``; etcd treats it
    as unset.
    """
    lines = _parse_env(text, file)
    return {name: line.value for name, line in _env_flag_lines(lines, text, file).items()}


def _env_scalar(value: str, style: str | None) -> str:
    if style == "'" and "'" not in value and "\\" not in value:
        return f"'{value}'"
    if style is None and _ENV_SAFE.fullmatch(value):
        return value
    return '"' + "".join("\\" + c if c in _SHELL_ESCAPED else c for c in value) + '"'


def env_var(name: str) -> str:
    """The variable etcd reads for a flag: ``initial-cluster-state`` -> ``ETCD_INITIAL_...``."""
    return ENV_PREFIX + name.upper().replace("-", "_")


def env_with_flags(text: str, file: str, set_: Mapping[str, str],
                   remove: Iterable[str]) -> str:
    """The environment file with flags set (in place or appended) and removed.

    An existing variable keeps its line, ``export`` and quoting style; new ones are appended
    at the end (with ``export`` and double quotes when every ``ETCD_`` line has them); removed
    ones lose their line. Values that are not plain words are double-quoted, escaping ``"``, ``\\``,
    ``$`` and backquotes (read the same by systemd and by a shell). Flags that already have the
    wanted value are left as they are.
    """
    wanted, gone = _check_request(file, set_, remove, _ENV_FLAG_NAME, empty_ok=False)
    lines = _parse_env(text, file)
    current = _env_flag_lines(lines, text, file)
    edits: list[Edit] = []
    for name in gone:
        if name in current:
            edits.append(_delete_line(text, current[name].start))
    appended: list[str] = []
    # New lines follow the file's convention when it has one: `export` and double quotes if
    # every ETCD_ line has them.
    export = "export " if current and all(ln.export for ln in current.values()) else ""
    style = '"' if current and all(ln.style == '"' for ln in current.values()) else None
    for name, value in wanted.items():
        line = current.get(name)
        if line is None:
            appended.append(f"{export}{env_var(name)}={_env_scalar(value, style)}")
        elif line.value != value:
            edits.append((line.start, line.end, line.head + _env_scalar(value, line.style)))
    if appended:
        eol = _eol(text)
        if not text:
            addition = "".join(a + eol for a in appended)
        elif text.endswith("\n"):
            addition = "".join(a + eol for a in appended)
        else:
            addition = "".join(eol + a for a in appended)
        edits.append((len(text), len(text), addition))
    result = _apply(text, edits)
    after = _parse_env(result, file)
    _check_result(file, {n: ln.value for n, ln in _env_flag_lines(after, result, file).items()},
                  _expected({n: ln.value for n, ln in current.items()}, wanted, gone))

    def others(ls: list[_EnvLine]) -> list[tuple[str, str]]:
        return [(ln.key, ln.value) for ln in ls
                if ln.key is not None and not _ENV_FLAG_KEY.fullmatch(ln.key)]

    if others(after) != others(lines):
        raise FormatError(file, 0, "the rewrite would change more than etcd's flags; "
                                   "nothing was changed")
    return result


# ------------------------------------------------------------------------------ dispatch, diff

def config_flags(runtime: str, text: str, file: str) -> dict[str, str]:
    """etcd's flags from the file the runtime keeps them in ("static-pod" or "systemd")."""
    if runtime == STATIC_POD:
        return manifest_flags(text, file)
    if runtime == SYSTEMD:
        return env_flags(text, file)
    raise UsageError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


def config_with_flags(runtime: str, text: str, file: str, set_: Mapping[str, str],
                      remove: Iterable[str]) -> str:
    """The runtime's file with flags set and removed (see manifest_/env_with_flags)."""
    if runtime == STATIC_POD:
        return manifest_with_flags(text, file, set_, remove)
    if runtime == SYSTEMD:
        return env_with_flags(text, file, set_, remove)
    raise UsageError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def unified_diff(old: str, new: str, path: str) -> str:
    """A unified diff of a file's change, labelled ``a<path>`` / ``b<path>`` like git's.

    Lines are split at ``\\n`` only; a last line without a newline is marked as git marks it.
    Empty when nothing changes.
    """
    out = []
    for line in difflib.unified_diff(_lines(old), _lines(new), f"a{path}", f"b{path}"):
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


# ---------------------------------------------------------------------------- initial-cluster

def _peer_url_problem(url: str) -> str | None:
    if not url:
        return "empty URL"
    if "," in url or any(c.isspace() for c in url):
        return "a URL may not hold ',' or whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        return "the scheme must be http or https"
    if parts.scheme in ("http", "https") and (not parts.hostname or port is None):
        return "needs host:port"
    if parts.path:
        return "a peer URL may not have a path"
    return None


def _name_problem(name: str) -> str | None:
    if not name:
        return "empty member name"
    if "," in name or "=" in name:
        return "a member name may not hold ',' or '='"
    if _BAD_VALUE_CHAR.search(name) or name != name.strip():
        return "a member name must be printable, without surrounding spaces"
    return None


def initial_cluster(members: Sequence[tuple[str, str]]) -> str:
    """``--initial-cluster``'s value: ``name=peerurl,...`` in the order given.

    A member with several peer URLs appears once per URL, as etcd expects.
    """
    if not members:
        raise UsageError("--initial-cluster needs at least one member")
    parts = []
    for name, url in members:
        problem = _name_problem(name) or _peer_url_problem(url)
        if problem:
            raise UsageError(f"cannot put member {name!r} ({url!r}) in --initial-cluster: "
                             f"{problem}")
        parts.append(f"{name}={url}")
    return ",".join(parts)


def parse_initial_cluster(value: str, file: str = "--initial-cluster") -> list[tuple[str, str]]:
    """``name=peerurl,...`` -> [(name, peerurl), ...] in order, as etcd splits it.

    Like etcd, empty entries (``a=u,,b=v``, a trailing comma) are skipped, blanks around a URL
    are dropped and a name may repeat (one entry per peer URL). What etcd would refuse, and
    names with blanks around them, raise FormatError(file, 0, ...).
    """
    result = []
    for entry in value.split(","):
        if not entry:
            continue
        name, eq, url = entry.partition("=")
        url = url.strip()
        if not eq:
            raise FormatError(file, 0, f"--initial-cluster entry {entry!r} has no '='")
        problem = _name_problem(name) or _peer_url_problem(url)
        if problem:
            raise FormatError(file, 0, f"--initial-cluster entry {entry!r}: {problem}")
        result.append((name, url))
    if not result:
        raise FormatError(file, 0, "--initial-cluster is empty")
    return result
