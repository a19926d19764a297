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
// no-op entry after the restore has committed, or when ctx ends (the
// restore may then still complete, or fail reading r).
//
// A restore takes as long as its size needs, so only ctx bounds it.
// Raft gets no timeout of its own: it runs one timer over the
// enqueueing, the restore and the no-op after it, so a restore slower
// than that timeout may be reported failed after it has replaced the
// state.
//
// TODO: a leader deposed between restoring its FSM and committing the
// no-op (a restore of 100 MB on a loaded host can outlast the followers'
// election timeout) keeps the restored state, which never committed,
// and a log it cannot match with the new leader's, until the new leader
// walks back to its snapshot and sends it (minutes); hashicorp/raft does
// not undo a user restore. Restoring the manager's last own snapshot
// into its FSM when Restore fails after the FSM restore, or refusing
// restores larger than a bound measured on the target hardware, would
// close it.
func (n *Node) Restore(ctx context.Context, r io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("raft restore: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	done := make(chan error, 1)
	go func() { done <- n.raft.Restore(meta, r, 0) }()
	select {
	case <-ctx.Done():
		return fmt.Errorf("raft restore: %w", ctx.Err())
	case err := <-done:
		if err != nil {
			return fmt.Errorf("raft restore: %w", err)
		}
	}
	n.log.Info("restored user snapshot", "bytes", size,
		"index", n.raft.AppliedIndex())
	return nil
}
