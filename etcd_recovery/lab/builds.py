"""The etcd builds the lab and its tests run: the list pinned in ``builds.txt`` beside this file.

scripts/setup installs every build listed there; tests name a build by its role
(``version_of("3.6-newest")``), so no test names a version that setup did not install.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

LIST = Path(__file__).with_name("builds.txt")


@dataclass(frozen=True)
class Build:
    version: str          # "3.6.16"
    source: str           # "go", or "debian:<suite>"
    roles: tuple[str, ...]


def parse(text: str) -> list[Build]:
    """``version source roles`` per line; ``#`` starts a comment. Each role names one build."""
    builds: list[Build] = []
    seen: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{LIST.name}:{n}: want 'version source roles', got {raw!r}")
        version, source, roles = parts[0], parts[1], tuple(parts[2].split(","))
        for role in roles:
            if role in seen:
                raise ValueError(f"{LIST.name}:{n}: role {role!r} already names {seen[role]}")
            seen[role] = version
        builds.append(Build(version, source, roles))
    return builds


@cache
def pinned() -> tuple[Build, ...]:
    return tuple(parse(LIST.read_text()))


def version_of(role: str) -> str:
    """The pinned version of a role ("3.6-newest" -> "3.6.16")."""
    for b in pinned():
        if role in b.roles:
            return b.version
    raise KeyError(f"no etcd build has the role {role!r} in {LIST}")
