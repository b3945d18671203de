"""kubeadm's layout: etcd is a static pod, defined by a manifest the kubelet watches."""

from __future__ import annotations

import posixpath

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

    def fence_how(self, m: Member) -> str:
        return "manifest moved out of the kubelet's directory"

    def start_argv(self, m: Member, staged: str) -> list[str]:
        # The kubelet starts the pod when the manifest appears or changes.
        return sh('set -e; if [ -e "$1" ]; then chmod 0600 "$1"; mv "$1" "$2"; fi; '
                  'test -e "$2"', staged, self.config_path(m))
