// Package runtime runs the containers of a worker's tasks through
// containerd: it pulls images, creates and starts containers on the host
// network with their output in a log file, stops and removes them, lists
// the ones it owns and reports their exits.
//
// It owns the containers of one containerd namespace that carry the label
// "hivemind.task-id". It never decides which tasks should run (the agent
// does), never restarts a container that exited, and never touches
// containers without that label.
//
// The client is containerd's v2 Go client; it also drives containerd 1.6
// daemons (Debian 12's), which is what the tests run against.
package runtime
