"""etcd-recovery: bring an etcd cluster back after it has lost quorum."""
__version__ = "0.1.0"
