package raftnode

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// restoreCounter is a testFSM that counts its restores: a node that
// caught up from a snapshot restored one, a node that replayed the log
// did not.
type restoreCounter struct {
	*testFSM
	restores atomic.Int64
}

func (f *restoreCounter) Restore(rc io.ReadCloser) error {
	f.restores.Add(1)
	return f.testFSM.Restore(rc)
}

// startSnapTCP starts name on the TCP transport with bolt stores in dir,
// snapshotting every few entries and keeping only two after each.
func startSnapTCP(t *testing.T, disc *fakeDiscovery, name, dir string) (*Node, *restoreCounter) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BindAddr, cfg.RaftPort = name, dir, "127.0.0.1", 0
	cfg.BootstrapExpect = 3
	cfg.Discovery = disc
	cfg.Logger = testutil.Logger(t, hclog.Info)
	cfg.SnapshotThreshold = 8
	cfg.SnapshotInterval = 200 * time.Millisecond
	cfg.TrailingLogs = 2
	f := &restoreCounter{testFSM: &testFSM{}}
	cfg.FSM = f

	n, err := New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	disc.add(Peer{Name: name, RaftAddr: n.Addr()}, n)
	return n, f
}

// lastSnapshotIndex is the index of n's latest snapshot, 0 if none.
func lastSnapshotIndex(n *Node) uint64 {
	i, _ := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	return i
}

// TestWipedNodeInstallsSnapshot stops a follower, empties its data dir
// and starts it again under the same name: once the leader has
// compacted its log past the trailing entries, the follower catches up
// by installing the leader's snapshot over the TCP transport, including
// one of over 50 MiB, and is a voter again.
func TestWipedNodeInstallsSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		entries int
		size    int // bytes per entry
	}{
		{name: "small", entries: 20, size: 16},
		{name: "50MiB", entries: 60, size: 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			disc := newFakeDiscovery()
			nodes := map[string]*tcpNode{}
			for _, name := range []string{"m1", "m2", "m3"} {
				n, f := startSnapTCP(t, disc, name, t.TempDir())
				nodes[name] = &tcpNode{node: n, fsm: f.testFSM}
			}
			leader := tcpLeader(t, nodes, 10*time.Second)
			var wiped string
			for _, name := range []string{"m1", "m2", "m3"} {
				if name != leader {
					wiped = name
				}
			}

			// The wiped node is gone before the entries are written, so
			// none of them reach it through the log.
			if err := nodes[wiped].node.Shutdown(); err != nil {
				t.Fatal(err)
			}
			disc.remove(wiped)
			dir := t.TempDir()
			delete(nodes, wiped)

			// Megabyte entries on a loaded machine may cost the leader
			// its lease: each entry is retried on the leader of the
			// moment, as a client would.
			var last uint64
			for i := range tc.entries {
				e := fmt.Sprintf("%03d-", i) + strings.Repeat("x", tc.size)
				testutil.WaitFor(t, 30*time.Second, func() error {
					leader = tcpLeader(t, nodes, 10*time.Second)
					idx, err := nodes[leader].node.Apply(t.Context(), []byte(e))
					if err != nil {
						return fmt.Errorf("apply entry %d on %s: %w", i, leader, err)
					}
					last = max(last, idx)
					return nil
				})
			}
			// The leader snapshots every 8 entries and keeps 2 after: its
			// log no longer starts at 1 and its snapshot holds all but
			// the last few entries.
			testutil.WaitFor(t, 30*time.Second, func() error {
				leader = tcpLeader(t, nodes, 10*time.Second)
				n := nodes[leader].node
				first, err := n.bolt.FirstIndex()
				if err != nil {
					return err
				}
				if got := lastSnapshotIndex(n); got+8 <= last || first <= 1 {
					return fmt.Errorf("leader %s: snapshot at index %d, log from %d, last entry %d",
						leader, got, first, last)
				}
				return nil
			})

			start := time.Now()
			n, f := startSnapTCP(t, disc, wiped, dir)
			nodes[wiped] = &tcpNode{node: n, fsm: f.testFSM}
			testutil.WaitFor(t, 60*time.Second, func() error {
				if got := len(f.list()); got < tc.entries {
					return fmt.Errorf("wiped %s holds %d entries, want %d", wiped, got, tc.entries)
				}
				if st := n.Stats(); st.AppliedIndex < last || !st.Voter {
					return fmt.Errorf("wiped %s: applied %d (want %d), voter %t",
						wiped, st.AppliedIndex, last, st.Voter)
				}
				return nil
			})
			t.Logf("%s caught up %s after its start", wiped, time.Since(start).Round(time.Millisecond))
			if f.restores.Load() == 0 {
				t.Errorf("wiped %s caught up without installing a snapshot", wiped)
			}
			snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "raft"), 1, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			metas, err := snaps.List()
			if err != nil || len(metas) == 0 {
				t.Fatalf("wiped %s: snapshots %v, error %v", wiped, metas, err)
			}
			t.Logf("%s installed snapshot %s of %d bytes", wiped, metas[0].ID, metas[0].Size)
			if want := int64(tc.entries-8) * int64(tc.size); metas[0].Size < want {
				t.Errorf("wiped %s: snapshot of %d bytes, want at least %d", wiped, metas[0].Size, want)
			}
		})
	}
}

// slowRestoreFSM is a testFSM whose Restore takes delay.
type slowRestoreFSM struct {
	*testFSM
	delay time.Duration
}

func (f *slowRestoreFSM) Restore(rc io.ReadCloser) error {
	time.Sleep(f.delay) // the work of restoring a large state
	return f.testFSM.Restore(rc)
}

// TestRestoreSlowerThanApplyTimeout restores, on a cluster of one, a
// snapshot whose FSM restore takes longer than the apply timeout: the
// restore succeeds and says so. Raft's own timer, had it been given
// the apply timeout, would fire during the restore and fail the no-op
// after it about every other time.
func TestRestoreSlowerThanApplyTimeout(t *testing.T) {
	old := defaultApplyTimeout
	defaultApplyTimeout = 50 * time.Millisecond
	t.Cleanup(func() { defaultApplyTimeout = old })

	cfg := testConfig(t, "n1")
	_, tr := raft.NewInmemTransport("mem-n1")
	f := &slowRestoreFSM{testFSM: &testFSM{}, delay: 200 * time.Millisecond}
	cfg.FSM, cfg.Transport = f, tr
	cfg.LogStore, cfg.StableStore = raft.NewInmemStore(), raft.NewInmemStore()
	cfg.SnapshotStore = raft.NewInmemSnapshotStore()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !n.IsLeader() {
			return fmt.Errorf("n1 is not leader of its cluster of one yet")
		}
		return nil
	})

	for i := range 6 {
		saved := &testFSM{entries: []string{fmt.Sprintf("saved-%d", i)}}
		snap, err := saved.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var sink bufSink
		if err := snap.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		err = n.Restore(t.Context(), bytes.NewReader(sink.Bytes()), int64(sink.Len()))
		if err != nil {
			t.Fatalf("restore %d, taking %s against an apply timeout of %s: %v",
				i, f.delay, defaultApplyTimeout, err)
		}
		if got := f.list(); len(got) != 1 || got[0] != saved.entries[0] {
			t.Fatalf("restore %d: state %v, want %v", i, got, saved.entries)
		}
	}
}
