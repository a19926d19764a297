package raftnode

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ bytes.Buffer }

func (s *bufSink) ID() string    { return "buf" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

// list returns a copy of the FSM's entries.
func (f *testFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

func TestRestore(t *testing.T) {
	c := MakeCluster(t, 3)
	c.waitServers("n1", "n2", "n3")
	leaderName := c.waitLeader(nil)
	leader := c.nodes[leaderName]

	for _, e := range []string{"old-1", "old-2"} {
		if _, err := leader.Apply(t.Context(), []byte(e)); err != nil {
			t.Fatalf("apply %s: %v", e, err)
		}
	}
	c.waitApplied("old-2")

	// A snapshot taken from another FSM, as `snapshot save` takes one
	// from another cluster or an earlier state.
	other := &testFSM{entries: []string{"saved-1", "saved-2", "saved-3"}}
	snap, err := other.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	want := other.list()

	t.Run("follower-refuses", func(t *testing.T) {
		for name, n := range c.nodes {
			if name == leaderName {
				continue
			}
			err := n.Restore(t.Context(), bytes.NewReader(sink.Bytes()), int64(sink.Len()))
			if !errors.Is(err, raft.ErrNotLeader) {
				t.Errorf("restore on follower %s: %v, want raft.ErrNotLeader", name, err)
			}
		}
	})

	before := leader.Stats().AppliedIndex
	if err := leader.Restore(t.Context(), bytes.NewReader(sink.Bytes()), int64(sink.Len())); err != nil {
		t.Fatalf("restore on leader: %v", err)
	}
	if after := leader.Stats().AppliedIndex; after <= before {
		t.Errorf("applied index %d after restore, want past %d", after, before)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		for name, f := range c.fsms {
			if got := f.list(); !slices.Equal(got, want) {
				return fmt.Errorf("%s has %v, want the restored %v", name, got, want)
			}
		}
		return nil
	})

	// The log goes on from the restored state on every node.
	if _, err := leader.Apply(t.Context(), []byte("after")); err != nil {
		t.Fatalf("apply after restore: %v", err)
	}
	c.waitApplied("after")
	for name, f := range c.fsms {
		if f.has("old-1") {
			t.Errorf("%s still holds old-1 after the restore: %v", name, f.list())
		}
	}
}
