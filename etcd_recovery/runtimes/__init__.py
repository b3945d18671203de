"""How the supported runtimes keep etcd's configuration, and how to change it.

``config`` reads and rewrites the two on-disk forms (a kubeadm static-pod manifest and a
systemd environment file) as pure text-in, text-out functions.
"""

from __future__ import annotations
