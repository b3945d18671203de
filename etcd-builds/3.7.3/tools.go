//go:build tools

// Package tools keeps etcd's three main modules in go.mod (go mod tidy drops unused requires).
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
