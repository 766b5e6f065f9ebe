//go:build tools

// Package tools pins the Dapr commands this module builds, so that
// `go mod tidy` keeps every dependency they need in go.sum.
package tools

import (
	_ "github.com/dapr/dapr/cmd/daprd"
	_ "github.com/dapr/dapr/cmd/injector"
	_ "github.com/dapr/dapr/cmd/placement"
	_ "github.com/dapr/dapr/cmd/scheduler"
)
