package raftnode

import (
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// Restore replaces the whole cluster's state with the snapshot read
// from r (size bytes, in the FSM's snapshot format), using Raft's user
// restore: the leader restores its FSM, the log index jumps past the
// current one, and every follower installs the snapshot. It must run
// on the leader (else raft.ErrNotLeader, wrapped) and returns once a
// no-op entry after the restore has committed. ctx's deadline bounds
// the enqueueing, as for Apply.
func (n *Node) Restore(ctx context.Context, r io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("raft restore: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := n.raft.Restore(meta, r, timeoutOf(ctx)); err != nil {
		return fmt.Errorf("raft restore: %w", err)
	}
	n.log.Info("restored user snapshot", "bytes", size,
		"index", n.raft.AppliedIndex())
	return nil
}
