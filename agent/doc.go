// Package agent is the worker: it registers with the managers, joins the
// gossip pool, watches the tasks assigned to its node, runs them as
// containers through agent/runtime, checks their health and reports their
// state back.
//
// The agent owns the containers of its node and nothing else: those it
// started carry the label hivemind.node=<worker name>, and a container
// without this worker's name (another worker sharing the containerd
// namespace, or one from before the label existed) is never adopted,
// stopped or removed. It never
// decides where a task runs, never restarts a task that failed (the leader
// places a replacement) and never stops a running container because the
// managers cannot be reached: while no manager answers, every container keeps
// running as it is. A restarted agent adopts the containers it finds once it
// has received its first list of assignments, and removes only containers
// that list does not want running.
//
// One goroutine, the runner, owns the task map; the assignment watcher, the
// runtime's exit stream, health checkers and container operations talk to it
// over channels.
package agent
