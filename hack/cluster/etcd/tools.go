//go:build tools

// Package tools pins the etcd server command this wrapper module builds. go.etcd.io/etcd/server/v3
// replaces its sibling modules with ../api etc., which `go install pkg@version` refuses, so the
// siblings are required at the same released version here instead.
package tools

import _ "go.etcd.io/etcd/server/v3"
