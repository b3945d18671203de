"""The Markdown runbook: the plan's actions as blocks of shell a person can paste.

It opens with the environment the blocks need (etcdctl's variables, one shell function per
way of reaching a host, and the predicates the waits poll), then gives every step as one
block whose commands have the same effect as the tool's actions: each action's ``show()``,
in order. Where the tool calls etcd's API, the block calls ``etcdctl``; for the WAL record it
gives the exact bytes and the ``dd`` that writes them. The blocks are meant for bash.
"""

from __future__ import annotations

import shlex

from . import etcdflags_sh
from .actions import (
    Action,
    AppendWal,
    Run,
    WriteFile,
    db_path,
    peer_probe_argv,
    read_in_order_argv,
    receive_argv,
    shell_join,
)
from .inventory import Inventory, Member
from .plan.scripts import COMMANDS_LOCK
from .plan.steps import BACKGROUND, Plan, StepKind, run_dir
from .runtimes.base import runtime_for

_PREDICATES = r"""retry() {  # retry SECONDS COMMAND...: run COMMAND until it succeeds
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    if [ "$SECONDS" -ge "$end" ]; then echo "timed out: $*" >&2; return 1; fi
    sleep 0.2
  done
}
leads_alone() {  # the only voter: a learner etcd left behind (etcd-io/etcd#20893) is removed next
  [ "$(etcdctl --endpoints="$1" member list | grep -c ', false$')" -eq 1 ] &&
    etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1
}
healthy_without_force() {
  runs_without_force "$1" && etcdctl --endpoints="$2" endpoint health >/dev/null 2>&1
}
voting_healthy() { etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1; }
members_are() {  # members_are ENDPOINT NAME=PEER_URL...: exactly these peer URLs
  local ep=$1; shift
  [ "$(printf '%s\n' "$@" | sed 's/^[^=]*=//' | sort)" = \
    "$(etcdctl --endpoints="$ep" member list | awk -F', ' '{print $4}' | sort)" ]
}
add_learner() {  # add_learner --endpoints=URL NAME PEER_URL: prints the new member's ID
  local out; out=$(etcdctl "$1" member add "$2" --learner --peer-urls="$3") || return 1
  printf '%s\n' "$out" | awk '/^Member /{print $2; exit}'
}
quorum_lost() {  # no member serves a linearizable read
  local ep
  for ep in "$@"; do
    if etcdctl --endpoints="$ep" --dial-timeout=2s --command-timeout=3s \
         get /etcd-recovery/probe >/dev/null 2>&1; then return 1; fi
  done
}
same_hashkv() {
  [ "$(etcdctl --endpoints="$KEPT" endpoint hashkv --cluster | awk -F', ' '{print $2}' |
      sort -u | grep -c .)" -eq 1 ]
}
revision_of() {  # the revision a member serves
  etcdctl --endpoints="$1" endpoint status -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p'
}
receive_on() {  # receive_on HOST PATH MODE SHA256 (stdin: the file): into PATH.partial on
  # HOST, checked against SHA256 there, then renamed onto PATH
  feed "$1" "$(printf '%q ' sh -c "$RECEIVE_SCRIPT" etcd-recovery "$2" "$3" "$4")"
}
serves_peers() {  # serves_peers NAME PEER_URL: etcd on NAME answers on its peer URL
  local hp=${2#*://} h; hp=${hp%%/*}; h=${hp%:*}; h=${h#[}; h=${h%]}
  on "$1" "$(printf '%q ' bash -c "$PEER_PROBE" etcd-recovery "$h" "${hp##*:}")"
}
copy_in() {  # copy_in FILE HOST PATH MODE [SHA256]: a file on this machine to HOST
  local sum=${5:-$(sha256sum "$1" | cut -d' ' -f1)}
  receive_on "$2" "$3" "$4" "$sum" < "$1"
}
copy_between() {  # copy_between SRC_HOST SRC_PATH HOST PATH MODE [SHA256]: through here
  local q sum; q=$(printf '%q' "$2")
  sum=${6:-$(on "$1" "sha256sum $q" | cut -d' ' -f1)}
  on "$1" "cat $q" | receive_on "$3" "$4" "$5" "$sum"
}"""

# The far end of copy_in/copy_between: the script the tool's copy runs (actions.receive_argv);
# and the probe serves_peers runs on a host (actions.peer_probe_argv).
RECEIVE_SCRIPT = receive_argv("PATH", 0, "SHA")[2]
PEER_PROBE = peer_probe_argv("http://host:1")[2]


HEREDOC_END = "ETCD_RECOVERY_EOF"  # the terminator WriteFile.show() ends its here-document with


def heredoc_terminator(content: str) -> str:
    """A here-document terminator that no line of ``content`` equals: ``ETCD_RECOVERY_EOF``,
    else the first of ``ETCD_RECOVERY_EOF_1``, ``_2``, ... that is free. (A line equal to the
    terminator would end the document there, and bash would run the rest of the file's
    content as commands on the operator's machine.)"""
    lines = set(content.splitlines())  # splits on every line break bash does, and more
    tag, n = HEREDOC_END, 0
    while tag in lines:
        n += 1
        tag = f"{HEREDOC_END}_{n}"
    return tag


def show_action(a: Action) -> str:
    """The action's shell, as ``a.show()`` gives it, except that a file's content is quoted
    with a here-document terminator that does not occur in it, and that a WAL record the tool
    computes once the member is fenced (etcd ran when the plan was made) stops the runbook
    with what to do: its bytes and offset exist only then, and are not guessed."""
    if isinstance(a, AppendWal) and a.offset < 0:
        why = (f"align-commit: etcd ran on {a.host} when this plan was made, so the WAL record "
               "to append (its bytes and offset) can only be read from its disk now that it "
               "is fenced. Make the runbook again from a plan made now: it gives the exact dd. "
               "Then go on from this step")
        return f"{{ echo {shlex.quote(why)} >&2; false; }}"
    text = a.show()
    if not isinstance(a, WriteFile):
        return text
    tag = heredoc_terminator(a.content)
    if tag == HEREDOC_END:
        return text
    body = a.content if a.content.endswith("\n") else a.content + "\n"
    opener = f" <<'{HEREDOC_END}'\n"
    head = text.partition(opener)[0]
    if text != f"{head}{opener}{body}{HEREDOC_END}":
        raise ValueError(f"write-file {a.path}: not the here-document form the runbook "
                         "knows how to re-quote")
    return f"{head} <<'{tag}'\n{body}{tag}"


def _ssh(m: Member) -> str:
    s = m.ssh
    words = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if s.known_hosts:
        words += ["-o", f"UserKnownHostsFile={s.known_hosts}"]
    if s.identity_file:
        words += ["-i", s.identity_file]
    if s.port:
        words += ["-p", str(s.port)]
    if s.jump:
        words += ["-J", s.jump]
    words.append(f"{s.user}@{s.host}" if s.user else s.host)
    return " ".join(shlex.quote(w) for w in words)


def environment(plan: Plan, inv: Inventory) -> list[str]:
    kept = inv.member(plan.chosen)
    # Every etcdctl line names its --endpoints: etcdctl 3.5 refuses a flag that shadows an
    # ETCDCTL_ENDPOINTS variable, so that one is left unset (and KEPT names the member kept).
    # No ETCDCTL_API: etcdctl speaks v3 by default since 3.4, and 3.6 warns about the variable
    # ("unrecognized environment variable").
    env = ["unset ETCDCTL_ENDPOINTS", f"export KEPT={shlex.quote(kept.client_url)}"]
    for var, path in (("ETCDCTL_CACERT", inv.tls.ca), ("ETCDCTL_CERT", inv.tls.cert),
                      ("ETCDCTL_KEY", inv.tls.key)):
        if path:
            env.append(f"export {var}={shlex.quote(path)}")
    if inv.auth:
        env.append(f'export ETCDCTL_USER="{inv.auth.user}:$(cat '
                   f'{shlex.quote(inv.auth.password_file)})"')
    lines = ["# etcdctl talks to the members' client URLs: run this where they are reachable",
             "# (or forward them over SSH first). Commands on hosts run as root through `on`",
             "# (no input) and `feed` (stdin passed on).",
             f"# Commands that can take time run under flock on {COMMANDS_LOCK}, each in a",
             "# session of its own (setsid; its pid, run and step in commands.pid): one that",
             "# goes on after an interruption (Ctrl-C, a lost connection) is waited for, not",
             "# raced, when its block is pasted again.", *env]
    for fn, flag in (("on", "-n "), ("feed", "")):
        lines.append(f"{fn}() {{")
        lines.append('  local h=$1; shift; case "$h" in')
        for m in inv.members:
            sudo = "sudo -n " if m.ssh.sudo else ""
            lines.append(f'    {m.name}) {_ssh(m).replace("ssh ", "ssh " + flag, 1)} '
                         f'"{sudo}$*" ;;')
        lines.append('    *) echo "unknown member $h" >&2; return 2 ;;')
        lines.append("  esac")
        lines.append("}")
    # The member's own etcd is the one whose data dir is the member's (a host can run
    # several: kops' etcd-main and etcd-events); etcdflags_sh reads each as etcd would.
    lines.append('data_dir_of() {  # the data dir the inventory names for a member')
    lines.append('  case "$1" in')
    for m in inv.members:
        lines.append(f"    {m.name}) echo {shlex.quote(m.data_dir)} ;;")
    lines.append('    *) echo "unknown member $1" >&2; return 2 ;;')
    lines += ["  esac", "}"]
    lines.append(f"RECEIVE_SCRIPT={shlex.quote(RECEIVE_SCRIPT)}")
    lines.append(f"PEER_PROBE={shlex.quote(PEER_PROBE)}")
    return [*lines, _PREDICATES, etcdflags_sh.FUNCTIONS]


def _verify_block(plan: Plan, inv: Inventory, members: list[str]) -> list[str]:
    rt = runtime_for(inv.runtime)
    ms = [inv.member(n) for n in members]
    ep = inv.member(members[0]).client_url
    lines = [f"retry 60 members_are {ep} "
             + " ".join(f"{m.name}={m.peer_url}" for m in ms),
             "! etcdctl --endpoints=\"$KEPT\" member list | grep -q ', true$'",
             *(f"retry 60 voting_healthy {m.client_url}" for m in ms),
             *(f"on {m.name} {shell_join(read_in_order_argv(db_path(m.data_dir)))} &"
               for m in ms),
             "wait",
             "retry 30 same_hashkv",
             "test -z \"$(etcdctl --endpoints=\"$KEPT\" alarm list)\""]
    for m in ms:
        lines.append(f"! on {m.name} grep -qiE 'force.new.cluster' "
                     f"{shlex.quote(rt.config_path(m))}")
        lines.append(f"runs_without_force {m.name}")
    return lines


def plan_markdown(plan: Plan, inv: Inventory, plan_id: str | None = None,
                  command: str | None = None) -> str:
    """A runbook a person can follow by hand, with the same effect as the tool's actions.
    ``plan_id``, ``command``: the plan's ID and the command that has the tool carry out
    exactly this plan."""
    out = [f"# Recovery runbook: cluster `{plan.cluster}` ({plan.runtime})", "",
           f"- Run id: `{plan.run_id}` (state on each host under `{run_dir(plan.run_id)}`)",
           f"- Member to keep: **{plan.chosen}** - {plan.reason}",
           f"- State fingerprint: `{plan.fingerprint}`",
           *([f"- Plan ID: `{plan_id}`"] if plan_id else []),
           *([f"- To have the tool carry out exactly this plan instead: `{command}`"]
             if command else []),
           *[f"- Advisory: {line}" for line in plan.advisories],
           *([f"- **WARNING:** {plan.minority_read.line()}"] if plan.minority_read else []),
           "",
           "Do the steps in order, in one bash session. Do not go on when a command fails: "
           "stop and look.", "", "## Environment", "", "```sh", *environment(plan, inv),
           "```", ""]
    for i, s in enumerate(plan.steps, 1):
        out += [f"## {i}. {s.title}", "",
                f"- Step id: `{s.id}`; host: `{s.host or 'every reachable member'}`",
                f"- Before: {s.precondition}", f"- After (check): {s.check}",
                *(["- The tool runs this step in the background while the next steps go on, "
                   "and waits for it before touching this host again (except to copy the "
                   "snapshot into the run's directory); by hand, run it now (or in a second "
                   "terminal)."] if s.group == BACKGROUND else []),
                *([f"- By hand, do {', '.join(s.params['skips'])} anyway: the tool reads the "
                   "consistent index out of the backend (bbolt) to tell whether they are "
                   "needed, and they are safe either way."] if s.kind is StepKind.LOG_CHECK
                  else []), ""]
        block: list[str] = []
        if s.kind is StepKind.PREFLIGHT and not s.params["allow_quorum"]:
            eps = " ".join(inv.member(n).client_url for n in s.params["members"])
            block.append(f"quorum_lost {eps}")
        block += [show_action(a) for a in s.actions]
        if s.kind is StepKind.FORCE_NEW_CLUSTER:
            url = inv.member(s.host or "").client_url
            block.append(f"KEYS_AFTER_RESTORE=$(etcdctl --endpoints={url} get '' --prefix "
                         "--keys-only | grep -c .)")
        if s.kind is StepKind.SNAPSHOT_MAKE:
            status = next(a for a in s.actions if isinstance(a, Run) and "status" in a.argv)
            block.append(f"SNAPSHOT_REVISION=$(on {s.host} "
                         + shlex.quote(shell_join(status.argv))
                         + " | grep -o '\"revision\":[0-9]*' | cut -d: -f2)")
            block.append(f'test "$SNAPSHOT_REVISION" -ge {s.params["min_revision"]}')
        if s.kind is StepKind.RESTORE_CHECK:
            rev = "$SNAPSHOT_REVISION" if s.params["ref"] else str(s.params["revision"])
            block.append(f'test "$(revision_of "$KEPT")" -ge $(({rev} + '
                         f'{s.params["bump_revision"]}))')
            block.append(f"{{ timeout 10 etcdctl --endpoints=\"$KEPT\" watch --rev={rev} "
                         "/etcd-recovery/probe 2>&1 || true; } | grep -q 'compacted'")
        if s.kind is StepKind.VERIFY:
            block += _verify_block(plan, inv, s.params["members"])
            if any(t.kind is StepKind.FORCE_NEW_CLUSTER for t in plan.steps):
                block.append('test "$(etcdctl --endpoints="$KEPT" get \'\' --prefix '
                             '--keys-only | grep -c .)" -ge "$KEYS_AFTER_RESTORE"')
        if block:
            out += ["```sh", *block, "```", ""]
    if plan.rejoin_later:
        out += ["## Members to bring back later", ""]
        out += [f"- `{n}`: `etcd-recovery rejoin {n} -i {plan.inventory}`"
                for n in plan.rejoin_later]
        out.append("")
    return "\n".join(out)
