//go:build tools

// Package tools pins the dapr CLI so that `go mod tidy` keeps its
// dependencies in go.sum.
package tools

import _ "github.com/dapr/cli"
