"""A runtime: how etcd is supervised on a host, and so how to fence, start and configure it.

One object per runtime (:mod:`.static_pod`, :mod:`.systemd`) replaces branches on the runtime's
name. Every method returns data (paths, argument lists); nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..etcdlog import Cause
from ..inventory import Member
from . import config as rconf


def sh(script: str, *args: str) -> list[str]:
    """A shell snippet with its values passed as positional parameters, never interpolated."""
    return ["sh", "-c", script, "etcd-recovery", *args]


class Runtime(Protocol):
    name: str

    def config_path(self, m: Member) -> str:
        """The file that holds etcd's flags (manifest or environment file)."""
        ...

    def fenced_config_path(self, m: Member, rdir: str) -> str:
        """Where the member's original configuration is while it is fenced."""
        ...

    def fence_argv(self, m: Member, rdir: str) -> list[str]:
        """Stop etcd so that its supervisor will not start it again."""
        ...

    def fence_how(self, m: Member) -> str:
        ...

    def stop_argv(self, m: Member, rdir: str) -> list[str]:
        """Stop etcd again after the run started it (the snapshot method's kept member, once
        it has applied its whole log), so that its supervisor will not start it; the
        original configuration kept by the fence stays where it is."""
        ...

    def start_argv(self, m: Member, staged: str) -> list[str]:
        """Put a staged configuration in force and (re)start etcd with it. Idempotent: when
        the staged file is already in place, it only makes sure etcd is started."""
        ...

    def log_argv(self, m: Member, lines: int) -> list[str]:
        """The last ``lines`` lines etcd wrote (its stderr, where it logs), newest last."""
        ...

    def state_argv(self, m: Member) -> list[str] | None:
        """What the supervisor says of etcd's unit now (None: nothing to ask it), read when
        a wait sees no etcd process and etcd's log says nothing fatal."""
        ...

    def state_cause(self, m: Member, state: str, log: Sequence[str],
                    before: str = "") -> Cause | None:
        """Why the supervisor will not run etcd, from ``state_argv``'s output and the last
        lines of the log (None: it may still); ``before``: that output when the wait began,
        so that what an earlier try left there is not taken for this one's cause."""
        ...

    def config_flags(self, text: str, file: str) -> dict[str, str]:
        ...

    def with_flags(self, text: str, file: str, set_: Mapping[str, str],
                   remove: Sequence[str] = ()) -> str:
        ...


_RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> None:
    """Offer ``runtime`` under its name. Only the factory, :mod:`etcd_recovery.runtimes`,
    calls this: it is the one place that knows the strategies, so this module imports none."""
    _RUNTIMES[runtime.name] = runtime


def runtime_for(name: str) -> Runtime:
    """The strategy for a runtime's name (KeyError for a name no runtime has). Python runs a
    package's ``__init__`` (here, the factory that registers every runtime) before any of its
    modules can be imported, so the table is full wherever this is imported from."""
    return _RUNTIMES[name]


class _ConfigEdits:
    name: str

    def config_flags(self, text: str, file: str) -> dict[str, str]:
        return rconf.config_flags(self.name, text, file)

    def with_flags(self, text: str, file: str, set_: Mapping[str, str],
                   remove: Sequence[str] = ()) -> str:
        return rconf.config_with_flags(self.name, text, file, set_, remove)
