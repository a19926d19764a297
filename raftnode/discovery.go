package raftnode

import (
	"context"
	"time"
)

// Peer is a manager found by discovery.
type Peer struct {
	// Name is the manager's name, used as its Raft server ID.
	Name string
	// RaftAddr is the host:port of its Raft transport.
	RaftAddr string
}

// Discovery tells the node which managers exist. The manager wiring
// implements it over gossip; tests use a fake.
type Discovery interface {
	// Managers returns the managers currently alive in gossip, this node
	// included, in any order.
	Managers() []Peer

	// PeerHasState reports whether p already has Raft state (a log with
	// at least one entry, hence a cluster it belongs to). Bootstrap asks
	// every discovered peer before bootstrapping and stands down if any
	// says yes, so that a manager restarted with an empty data directory
	// waits to be added back instead of founding a second cluster.
	//
	// The manager wiring implements it with a gRPC call to
	// pb.Peer/RaftStats on p, a non-zero index meaning state. An error
	// means "unknown": bootstrap retries later rather than guess.
	PeerHasState(ctx context.Context, p Peer) (bool, error)
}

// DiscoveryNotifier is optionally implemented by a Discovery whose
// manager set can change (gossip.Pool's Changed, for instance). When
// present, bootstrap and the leader's voter reconciliation react to it
// at once instead of waiting for their next tick.
type DiscoveryNotifier interface {
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
}

// DeadPeer is a manager that discovery saw alive once and now sees dead
// or gone (it failed or left).
type DeadPeer struct {
	// Name is the manager's name, its Raft server ID.
	Name string
	// Since is when discovery saw it die or leave, on the local clock.
	Since time.Time
}

// DeadManagerLister is optionally implemented by a Discovery that
// remembers managers no longer alive (gossip keeps dead members). With
// it, the leader removes from the voter set a manager dead for longer
// than Config.DeadServerCleanup; without it, removal stays manual.
type DeadManagerLister interface {
	// DeadManagers returns the managers dead or left, with the time they
	// were first seen so, in any order. A manager alive again is not in
	// the list.
	DeadManagers() []DeadPeer
}
