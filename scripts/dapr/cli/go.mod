// Wrapper module that builds the dapr CLI from the Go module proxy, with its
// dependency checksums pinned in go.sum. The CLI's main package is the module
// root; install.sh installs the binary under the name `dapr`.
module intraday.local/dapr-cli

go 1.24.9

require github.com/dapr/cli v1.16.5

// The CLI imports dapr runtime packages that pin components-contrib v1.16.3,
// which the module proxy reachable here does not serve; v1.16.5 is the next
// patch release of the same minor version.
replace github.com/dapr/components-contrib => github.com/dapr/components-contrib v1.16.5
