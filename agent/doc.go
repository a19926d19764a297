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
// that list does not want running. An adopted container keeps the health
// the leader last saw until a check result changes it.
//
// The agent also serves traffic: it follows the managers' endpoint set
// (the healthy tasks of every app) and hands it to its ingress proxy
// (agent/ingress) and its DNS server (agent/dns), then reports the index
// of the set it serves. While no manager answers, both keep serving the
// last set. It never decides which tasks are in rotation.
//
// A task told to stop while it runs drains first: it is reported
// draining and keeps running until the leader marks it out of rotation
// (every live worker serves a set without it), then its open ingress
// connections get up to drain_timeout to end, and only then is it sent
// the stop signal, with stop_timeout before the kill. A container found
// at start whose task is to stop goes through the same steps.
//
// One goroutine, the runner, owns the task map; the assignment watcher, the
// runtime's exit stream, health checkers and container operations talk to it
// over channels. Another, the endpoints watcher, owns the proxy's and the
// DNS server's updates; the runner only reads the proxy's connection
// counts.
package agent
