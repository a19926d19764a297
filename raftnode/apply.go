package raftnode

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
)

// defaultApplyTimeout bounds enqueuing an entry when ctx has no
// deadline. A variable for tests.
var defaultApplyTimeout = 10 * time.Second

// Apply appends data to the log and waits until this node's FSM has
// applied it or ctx ends. It returns the entry's index and, when the
// FSM's Apply returned an error, that error. Raft failures
// (raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrEnqueueTimeout,
// raft.ErrRaftShutdown) come back wrapped. When ctx ends first the
// entry may still commit.
func (n *Node) Apply(ctx context.Context, data []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("raft apply: %w", err)
	}
	f := n.raft.Apply(data, timeoutOf(ctx))

	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return 0, fmt.Errorf("raft apply: %w", ctx.Err())
	case err := <-done:
		if err != nil {
			return 0, fmt.Errorf("raft apply: %w", err)
		}
	}

	if err, ok := f.Response().(error); ok {
		return f.Index(), err
	}
	return f.Index(), nil
}

// Propose encodes msg as a command of type t (fsm.Encode) and Applies
// it. Encoding errors wrap fsm.ErrUnknownCommand or fsm.ErrInvalid.
func (n *Node) Propose(ctx context.Context, t fsm.CommandType,
	msg proto.Message) (uint64, error) {
	data, err := fsm.Encode(t, msg)
	if err != nil {
		return 0, err
	}
	return n.Apply(ctx, data)
}

// Barrier waits until every entry committed before the call has been
// applied to this node's FSM; it must run on the leader. A new leader
// calls it before acting on its state.
func (n *Node) Barrier(ctx context.Context) error {
	f := n.raft.Barrier(timeoutOf(ctx))

	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return fmt.Errorf("raft barrier: %w", ctx.Err())
	case err := <-done:
		if err != nil {
			return fmt.Errorf("raft barrier: %w", err)
		}
		return nil
	}
}

// timeoutOf is the time left before ctx's deadline, or
// defaultApplyTimeout.
func timeoutOf(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return defaultApplyTimeout
	}
	if left := time.Until(d); left > 0 {
		return left
	}
	// Already expired: the shortest wait raft accepts, failing fast.
	return time.Nanosecond
}
