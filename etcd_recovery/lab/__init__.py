"""The lab: real etcd hosts in Docker containers, reached over real SSH, for tests and rehearsal.

Each lab host is a container running systemd as PID 1, with its own addresses, file system,
sshd and host key, and etcd run the way production runs it (a static pod behind a small
kubelet-like supervisor, or a systemd unit). Everything the lab makes is labelled with the lab's
id so ``lab down`` removes exactly that and nothing else.
"""
