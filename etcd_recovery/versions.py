"""What each etcd version means for a recovery: known bugs, their fixes, and the plan's
one-line advisories. Pure functions over version strings.

Every fact below was read in etcd-io/etcd: the changelogs (CHANGELOG/CHANGELOG-3.5.md and
CHANGELOG-3.6.md on main, c34dc7ee; release tags carry no changelog) and the code at the tags
named. Newest tags then: v3.4.45, v3.5.33, v3.6.14, v3.7.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]


def parse_version(text: str | None) -> Version | None:
    """"3.5.30", "v3.6.1", "3.6.0-rc.1" -> (3, 5, 30) ...; None when unknown or unparsable."""
    if not text:
        return None
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _fixed_in(v: Version, fixes: dict[tuple[int, int], int | None]) -> bool:
    """Whether ``v`` carries a fix that landed in ``fixes[(major, minor)]`` (a patch number;
    None: never in that line). Lines newer than every listed one carry it."""
    line = (v[0], v[1])
    if line in fixes:
        patch = fixes[line]
        return patch is not None and v[2] >= patch
    return line > max(fixes)


# force-new-cluster sets commit = max(HardState commit, consistent index) (etcd-io/etcd#20055;
# #20339 in v3.5.22: server/etcdserver/raft.go; #20071 in v3.6.1: server/etcdserver/bootstrap.go;
# absent at v3.5.21 and v3.6.0). 3.4 never got it (etcdserver/raft.go unchanged at v3.4.45).
COMMIT_FIX: dict[tuple[int, int], int | None] = {(3, 4): None, (3, 5): 22, (3, 6): 1}
# Learners left in membership after force-new-cluster (etcd-io/etcd#20893): #20897 in v3.5.25,
# #20896 in v3.6.6; not in 3.4 as of v3.4.45.
LEARNER_FIX: dict[tuple[int, int], int | None] = {(3, 4): None, (3, 5): 25, (3, 6): 6}
# Promoted members coming back as learners after a restart: #19557 (fixed v3.5.20, and in
# v3.6.0-rc.3) and #20793 (fixed v3.5.24 by #20797; no 3.6 changelog entry names it, so 3.6 is
# taken as not known to be fixed).
PROMOTE_FIX: dict[tuple[int, int], int | None] = {(3, 4): None, (3, 5): 24, (3, 6): None}


def commit_fix(v: Version | None) -> bool:
    """Does this etcd raise the commit to the consistent index on --force-new-cluster?"""
    return v is not None and _fixed_in(v, COMMIT_FIX)


def panics_on_force_new_cluster(v: Version | None) -> bool:
    """etcd 3.6.0 panics on --force-new-cluster with a reused data dir (etcd-io/etcd#20009;
    fixed in v3.6.1 by #20071 and #20051, "Add protection on PromoteMember and
    UpdateRaftAttributes to prevent panicking")."""
    return v == (3, 6, 0)


@dataclass(frozen=True)
class Advisory:
    member: str
    version: str
    issue: str         # "etcd-io/etcd#20893"
    text: str          # one line: what it means and what the plan does about it
    refuse: bool = False

    def line(self) -> str:
        return f"{self.member} (etcd {self.version}): {self.text} ({self.issue})"


def advisories(kept: str, versions: dict[str, str | None],
               runtime: str = "static-pod") -> list[Advisory]:
    """The plan's version advisories: ``versions`` maps each reachable member to its etcd
    version (None: unknown); ``kept`` is the member to keep, which runs --force-new-cluster;
    ``runtime`` says how a fixed build is put in place."""
    out: list[Advisory] = []
    kept_text = versions.get(kept)
    v = parse_version(kept_text)
    if kept_text is None or v is None:
        out.append(Advisory(kept, kept_text or "unknown", "etcd-io/etcd#20055",
                            "version unknown: treated as lacking every fix below, so "
                            "align-commit writes its record and member removals are read back"))
        return out
    if panics_on_force_new_cluster(v):
        out.append(Advisory(kept, kept_text, "etcd-io/etcd#20009",
                            "3.6.0 panics on --force-new-cluster with a reused data dir, "
                            "fixed in 3.6.1: run the restore with a >= 3.6.1 build ("
                            + ("plan again with --etcd-image IMAGE" if runtime == "static-pod"
                               else "plan again with --etcd-binary PATH, a build on that "
                                    "host") + ")", refuse=True))
    older = {name: pv for name, text in sorted(versions.items())
             if name != kept and (pv := parse_version(text)) is not None and pv[:2] < v[:2]}
    for name, pv in older.items():
        # Alone after --force-new-cluster, the kept member sets the cluster version to its own
        # minor; an older etcd then refuses to join ("incompatible with current running
        # cluster": server/etcdserver/cluster_util.go, isCompatibleWithCluster, at v3.5.35),
        # seen on real 3.5.35 learners of a 3.6.16 member.
        minor, older_minor = f"{v[0]}.{v[1]}", f"{pv[0]}.{pv[1]}"
        out.append(Advisory(
            name, versions[name] or "", "etcd-io/etcd cluster_util.go isCompatibleWithCluster",
            f"cannot rejoin {kept}: restarted alone, {kept} (etcd {kept_text}) makes the "
            f"cluster {minor}, and etcd {older_minor} refuses to join it; upgrade {name} to "
            f"etcd {minor} first, or keep an etcd {older_minor} member with --exclude {kept}, "
            f"which loses the writes only {kept} holds", refuse=True))
    if commit_fix(v):
        out.append(Advisory(kept, kept_text, "etcd-io/etcd#20055",
                            "force-new-cluster itself raises the commit to the consistent "
                            "index; align-commit writes only when the log goes further"))
    else:
        out.append(Advisory(kept, kept_text, "etcd-io/etcd#20055",
                            "force-new-cluster keeps only entries up to the WAL's commit: "
                            "align-commit makes the whole log committed first"))
    if not _fixed_in(v, LEARNER_FIX):
        out.append(Advisory(kept, kept_text, "etcd-io/etcd#20893",
                            "learners can stay in membership after force-new-cluster: "
                            "remove-stale-members removes each by ID and reads the member "
                            "list back"))
    if v[:2] == (3, 6):
        out.append(Advisory(kept, kept_text, "etcd-io/etcd#21867",
                            "removed peers reported staying in 3.6's membership backend after "
                            "force-new-cluster (an open pull request): the member list is read "
                            "back after every removal and add"))
    for name, text in sorted(versions.items()):
        pv = parse_version(text)
        if name != kept and pv is not None and not _fixed_in(pv, PROMOTE_FIX):
            out.append(Advisory(name, text or "", "etcd-io/etcd#20793",
                                "a promoted member can come back as a learner after a "
                                "restart: each promote waits until the member itself reports "
                                "a voter, and verify checks every member votes"))
    return out
