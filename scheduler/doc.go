// Package scheduler chooses worker nodes and host ports for new tasks.
//
// It owns feasibility (which nodes may take a task) and ranking (which of
// them should). It is pure: it reads the nodes and tasks it is given and
// returns placements. It never reads the clock, the store or the network,
// and it never proposes anything; the rollout engine in package deploy
// turns placements into tasks.
package scheduler
