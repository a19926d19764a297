// Package raftnode owns this manager's Raft replica: the log and stable
// store (raft-boltdb), the file snapshot store, the network transport,
// the bootstrap of a new cluster (a cluster of one, or Consul-style
// bootstrap-expect over the managers found by gossip), adding newly
// discovered managers as voters while leader, removing managers dead in
// gossip for longer than Config.DeadServerCleanup with
// hashicorp/raft-autopilot (never below max(BootstrapExpect,
// ClusterMinVoters(), 1) voters), and leadership events.
//
// It never interprets log entries: the state machine is the raft.FSM
// given in Config, and Apply hands it opaque bytes (Propose encodes a
// command with package fsm first). Apart from that dead-server cleanup,
// it never removes a server on its own; other removals are explicit
// RemoveServer calls.
package raftnode
