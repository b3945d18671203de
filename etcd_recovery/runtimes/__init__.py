"""How the supported runtimes supervise etcd and keep its configuration, and how to change it.

This package's ``__init__`` is the factory: it picks the strategy for each runtime name
(:mod:`.static_pod`, :mod:`.systemd`, both behind :class:`.base.Runtime`) and registers it, so
that :func:`.base.runtime_for` answers without :mod:`.base` importing its own implementations.
``config`` reads and rewrites the two on-disk forms (a kubeadm static-pod manifest and a
systemd environment file) as pure text-in, text-out functions.
"""

from __future__ import annotations

from .base import Runtime, register, runtime_for
from .static_pod import StaticPod
from .systemd import Systemd

register(StaticPod())
register(Systemd())

__all__ = ["Runtime", "runtime_for"]
