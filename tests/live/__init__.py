"""Tests against real etcd members started on loopback."""
