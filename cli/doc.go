// Package cli is the hivemind command line: the commands, their flags and
// what they print.
//
// `hivemind manager` and `hivemind worker` build a long-running process
// from the packages below (fsm, raftnode, gossip, rpc and deploy for a
// manager; agent for a worker) and wire them together, nothing more. Every
// other command is a client of a manager's HTTP API (proto/api.yaml) and
// prints a table, or with -o json a fixed JSON shape that scripts may rely
// on.
//
// The package owns flags, wiring and output. It never holds cluster logic:
// what a manager or a worker does lives in its packages, and what a spec
// may say lives in spec.
package cli
