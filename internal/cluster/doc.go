// Package cluster starts a whole Hivemind on one machine from the hivemind
// binary, for the integration tests and the demo: managers and workers on
// loopback addresses, a private containerd per worker, and a local registry
// serving the test web image in several versions.
//
// It owns the processes it starts, their data directories and log files,
// and the containers its workers run: Stop removes all of them. It talks to
// the cluster only the way a user does, through the CLI with -o json, and
// through ctr for what containerd holds. It never uses the machine's own
// containerd, and it takes no testing.T: progress goes to a log writer.
package cluster
