"""kubeadm's layout: etcd is a static pod, defined by a manifest the kubelet watches."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..etcdlog import Cause
from ..inventory import Member
from .base import _ConfigEdits, sh


class StaticPod(_ConfigEdits):
    name = "static-pod"

    def config_path(self, m: Member) -> str:
        assert m.manifest
        return m.manifest

    def fenced_config_path(self, m: Member, rdir: str) -> str:
        return posixpath.join(rdir, "etcd.yaml.fenced")

    def fence_argv(self, m: Member, rdir: str) -> list[str]:
        # The kubelet stops the pod when its manifest leaves the manifests directory.
        return sh('set -e; mkdir -p -m 0700 "$2"; '
                  'if [ -e "$1" ]; then mv "$1" "$2/etcd.yaml.fenced"; fi; '
                  'test -e "$2/etcd.yaml.fenced"', self.config_path(m), rdir)

    def stop_argv(self, m: Member, rdir: str) -> list[str]:
        # Not fence_argv: that would move the manifest in force now (the run's own) onto the
        # original one the fence kept.
        return sh('set -e; mkdir -p -m 0700 "$2"; '
                  'if [ -e "$1" ]; then mv "$1" "$2/etcd.yaml.stopped"; fi', self.config_path(m),
                  rdir)

    def fence_how(self, m: Member) -> str:
        return "manifest moved out of the kubelet's directory"

    def start_argv(self, m: Member, staged: str) -> list[str]:
        # The kubelet starts the pod when the manifest appears or changes.
        return sh('set -e; if [ -e "$1" ]; then chmod 0600 "$1"; mv "$1" "$2"; fi; '
                  'test -e "$2"', staged, self.config_path(m))

    def log_argv(self, m: Member, lines: int) -> list[str]:
        # The container's log: crictl where a CRI runtime runs it; else the kubelet's own copy
        # (/var/log/pods/<namespace>_<pod>_<uid>/etcd/<restart>.log, the newest first), or the
        # lab's kubelet-lite (/var/log/pods/etcd.log).
        return sh('n="$1"; if command -v crictl >/dev/null 2>&1 && '
                  'id=$(crictl ps -a --name "^etcd$" -q 2>/dev/null | head -n 1) && '
                  '[ -n "$id" ]; then crictl logs --tail "$n" "$id" 2>&1; exit 0; fi; '
                  'f=$(ls -t /var/log/pods/*_etcd-*/etcd/*.log /var/log/pods/etcd.log '
                  '2>/dev/null | head -n 1); [ -n "$f" ] && tail -n "$n" "$f"; exit 0',
                  str(lines))

    def state_argv(self, m: Member) -> list[str] | None:
        return None     # the kubelet's view of the pod is not asked (yet)

    def state_cause(self, m: Member, state: str, log: Sequence[str],
                    before: str = "") -> Cause | None:
        return None
