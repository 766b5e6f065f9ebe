//go:build tools

// The binaries this module builds: go build k8s.io/kubernetes/cmd/kube-apiserver
// k8s.io/kubernetes/cmd/kubectl (scripts/setup.sh).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
