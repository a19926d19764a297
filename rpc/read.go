package rpc

import (
	"context"

	"github.com/hivemind-orch/hivemind/raftnode"
)

// ConsistentReader is the part of the Raft node that makes the leader's
// answers linearizable. *raftnode.Node implements it.
type ConsistentReader interface {
	// ConsistentRead returns nil once reads of the local store are
	// linearizable: this manager leads, has applied every entry of
	// earlier terms, and a quorum confirmed during the call that it
	// still leads. It fails on a follower and on a leader cut off from
	// a quorum.
	ConsistentRead(ctx context.Context) error
}

var _ ConsistentReader = (*raftnode.Node)(nil)

// consistentRead runs before every leader-only method on the leader,
// reads and writes alike: the writes read the store too (does the app
// exist, is the spec unchanged) and may answer from it without
// proposing anything. A Config.Raft without ConsistentReader is a test
// fake whose store is the only replica, and is taken as consistent.
func (s *Server) consistentRead(ctx context.Context) error {
	cr, ok := s.cfg.Raft.(ConsistentReader)
	if !ok {
		return nil
	}
	return cr.ConsistentRead(ctx)
}
