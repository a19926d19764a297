// Package gossip owns cluster membership by SWIM gossip: which managers
// and workers exist, and whether each is alive as seen from this process.
// It wraps hashicorp/memberlist, publishes a small JSON Meta per node
// (role, name, ports) and keeps every member ever seen, dead or alive,
// with the local time it entered that state.
//
// It never decides anything from liveness: it does not mark nodes down
// in the cluster state, place tasks or touch Raft. Callers (the manager
// wiring, the rollout engine, the worker agent) read Members and watch
// Changed, and act on their own clock and grace periods.
package gossip
