// Package testenv starts the real things that the integration tests and
// the demo program run against: a private containerd daemon under a
// directory of its own, an in-memory OCI registry on a loopback address,
// images of the small web server in ./webserver, and child processes with
// their output in log files.
//
// It never touches the machine's own containerd (/run/containerd/
// containerd.sock) and never depends on package testing: every helper
// takes a directory or an address and returns an error, so a demo program
// can use it as well as a test.
package testenv
