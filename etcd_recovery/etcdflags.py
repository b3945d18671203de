"""etcd's command line and environment, read as etcd reads them. Pure: argv and environment
in, flags out.

etcd parses its flags with Go's ``flag`` package (``FlagSet.parseOne`` in Go's
src/flag/flag.go), then sets every flag not given on the command line from ``ETCD_<NAME>``
(``flags.SetFlagsFromEnv`` in etcd's client/pkg/flags/flag.go at v3.5.16; server/etcdmain
/config.go parses). The rules that matter here:

- ``-name`` and ``--name`` are the same; ``--name=value`` gives a value; ``--`` ends the
  flags; the first argument that is not a flag ends them too, and etcd then refuses to start
  ("'x' is not a valid flag"), so a running etcd has none.
- A boolean flag takes a value only with ``=`` (``--force-new-cluster=false``); bare, it is
  true; its value is one of Go's ``strconv.ParseBool`` words. Any other flag takes the next
  argument as its value when it has no ``=``, whatever that argument looks like.
- The command line wins over the environment; ``--config-file`` (or ``ETCD_CONFIG_FILE``)
  makes etcd read its configuration from that file instead, which this does not read.

One parser for every place that asks whether etcd runs with ``--force-new-cluster``: a
process (``/proc/PID/cmdline`` and ``environ``), a static pod's ``command`` and an
environment file. ``own_process`` picks the member's own etcd among several on one host (kops
runs etcd-main and etcd-events) by its data dir.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# etcd's boolean flags (server/embed/config.go and server/etcdmain/config.go, v3.4-v3.7):
# only these take no separate value argument.
BOOL_FLAGS = frozenset({
    "force-new-cluster", "strict-reconfig-check", "enable-v2", "enable-pprof",
    "client-cert-auth", "peer-client-cert-auth", "auto-tls", "peer-auto-tls",
    "enable-grpc-gateway", "socket-reuse-port", "socket-reuse-address", "pre-vote",
    "enable-log-rotation", "unsafe-no-fsync", "version", "help", "h",
    "experimental-initial-corrupt-check", "experimental-enable-distributed-tracing",
    "experimental-memory-mlock", "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-stop-grpc-service-on-defrag", "experimental-compact-hash-check-enabled",
    "experimental-peer-skip-client-san-verification", "peer-skip-client-san-verification",
    "enable-distributed-tracing", "memory-mlock",
    "stop-grpc-service-on-defrag", "compact-hash-check-enabled",
    "txn-mode-write-with-shared-buffer", "experimental-set-member-localaddr",
})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class EtcdFlags:
    """What etcd would make of an argv and an environment."""

    flags: dict[str, str] = field(default_factory=dict)   # command line and ETCD_*, by name
    from_env: frozenset[str] = frozenset()                # names whose value is the env's
    extra: tuple[str, ...] = ()      # arguments after the flags: etcd refuses to start
    error: str | None = None         # a flag etcd refuses ("bad flag syntax", no value)

    @property
    def config_file(self) -> str | None:
        return self.flags.get("config-file") or None

    def boolean(self, name: str) -> bool | None:
        """A boolean flag's value: False when not set; None when etcd could not tell (its
        config file decides, or the value is not one of Go's boolean words)."""
        if self.config_file:
            return None
        value = self.flags.get(name)
        if value is None:
            return False
        return True if value in _TRUE else False if value in _FALSE else None


def argv_from_cmdline(cmdline: bytes) -> list[str]:
    """``/proc/PID/cmdline``: NUL-separated arguments."""
    parts = cmdline.split(b"\0")
    if cmdline.endswith(b"\0"):
        parts.pop()
    return [a.decode(errors="replace") for a in parts]


def env_from_environ(environ: bytes) -> dict[str, str]:
    """``/proc/PID/environ``: NUL-separated ``KEY=VALUE``."""
    env: dict[str, str] = {}
    for item in environ.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key:
            env[key] = value
    return env


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> EtcdFlags:
    """etcd's flags from its argv (``argv[0]`` the program) and environment."""
    flags: dict[str, str] = {}
    args = list(argv[1:])
    error: str | None = None
    while args:
        s = args[0]
        if len(s) < 2 or s[0] != "-":
            break
        dashes = 2 if s[1] == "-" else 1
        if s == "--":
            args.pop(0)
            break
        name = s[dashes:]
        if not name or name[0] in "-=":
            error = f"bad flag syntax: {s}"
            break
        args.pop(0)
        name, has_value, value = name.partition("=")
        if not has_value and name not in BOOL_FLAGS:
            if not args:
                error = f"flag needs an argument: -{name}"
                break
            value = args.pop(0)
        elif not has_value:
            value = "true"
        flags[name] = value
    from_env: set[str] = set()
    for key, value in (env or {}).items():
        if key.startswith("ETCD_") and key != "ETCD_UNSUPPORTED_ARCH":
            name = key[5:].lower().replace("_", "-")
            if name not in flags:
                flags[name] = value
                from_env.add(name)
    return EtcdFlags(flags, frozenset(from_env), tuple(args), error)


def runs_with_force_new_cluster(argv: Sequence[str], env: Mapping[str, str] | None = None
                                ) -> bool | None:
    """Does etcd started so run with ``--force-new-cluster``? None: it cannot be told (a
    config file decides, a value is no boolean, or etcd would not start with these flags)."""
    parsed = parse(argv, env)
    if parsed.error or parsed.extra:
        return None
    return parsed.boolean("force-new-cluster")


def env_file(text: str) -> dict[str, str]:
    """A systemd ``EnvironmentFile``'s ``KEY=VALUE`` lines (comments and blanks skipped,
    one pair of surrounding quotes taken off), as the environment etcd gets."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if sep:
            env[key.strip()] = value
    return env


def data_dir(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """The data dir an etcd process uses (``--data-dir`` or ``ETCD_DATA_DIR``), normalized;
    None when neither says (etcd then uses ``<name>.etcd`` in its working directory)."""
    value = parse(argv, env).flags.get("data-dir")
    return posixpath.normpath(value) if value else None


def own_process(processes: Mapping[int, tuple[Sequence[str], Mapping[str, str]]],
                member_data_dir: str) -> int | None:
    """The member's own etcd among a host's etcd processes (pid -> argv, environment): the one
    whose data dir is the member's; a lone etcd that names no data dir counts as its own (as
    ``pgrep -x etcd`` did); None when none is. Two with the member's data dir cannot both
    run (etcd locks it), so the lowest pid is taken."""
    want = posixpath.normpath(member_data_dir)
    mine = sorted(pid for pid, (argv, env) in processes.items() if data_dir(argv, env) == want)
    if mine:
        return mine[0]
    if len(processes) == 1:
        (pid, (argv, env)), = processes.items()
        if data_dir(argv, env) is None:
            return pid
    return None


def force_new_cluster_set(flags: Mapping[str, str]) -> bool | None:
    """A configuration's flags (a manifest's command or an env file, by flag name): does it
    start etcd with --force-new-cluster? Bare or with a true word: True; a false word or
    absent: False; anything else: None (etcd would refuse the value)."""
    value = flags.get("force-new-cluster")
    if value is None:
        return False
    if value in ("", *_TRUE):
        return True
    return False if value in _FALSE else None
