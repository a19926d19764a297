package raftnode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// tcpNode is a node on the real TCP transport with bolt stores.
type tcpNode struct {
	node *Node
	fsm  *testFSM
	dir  string
}

// startTCP starts name on 127.0.0.1 with a free port and the default
// (production) timings, with its data in dir.
func startTCP(t *testing.T, disc *fakeDiscovery, name, dir string) *tcpNode {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BindAddr, cfg.RaftPort = name, dir, "127.0.0.1", 0
	cfg.BootstrapExpect = 3
	cfg.Discovery = disc
	cfg.Logger = testutil.Logger(t, hclog.Info)
	f := &testFSM{}
	cfg.FSM = f

	n, err := New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	disc.add(Peer{Name: name, RaftAddr: n.Addr()}, n)
	return &tcpNode{node: n, fsm: f, dir: dir}
}

// tcpLeader waits until a node in nodes is leader and every node
// knows it, and returns its name.
func tcpLeader(t *testing.T, nodes map[string]*tcpNode, d time.Duration) string {
	t.Helper()
	var leader string
	testutil.WaitFor(t, d, func() error {
		leader = ""
		for name, n := range nodes {
			l, _ := n.node.Leader()
			switch {
			case l == "" || nodes[l] == nil:
				return fmt.Errorf("%s follows %q, not a running node", name, l)
			case leader != "" && l != leader:
				return fmt.Errorf("%s follows %s, others %s", name, l, leader)
			}
			leader = l
		}
		return nil
	})
	return leader
}

func TestTCPCluster(t *testing.T) {
	disc := newFakeDiscovery()
	nodes := make(map[string]*tcpNode)
	for _, name := range []string{"m2", "m3", "m1"} {
		nodes[name] = startTCP(t, disc, name, t.TempDir())
	}
	leader := tcpLeader(t, nodes, 10*time.Second)
	if _, err := nodes[leader].node.Apply(t.Context(), []byte("one")); err != nil {
		t.Fatalf("apply: %v", err)
	}

	// Kill the leader; report how long the election takes.
	old := nodes[leader]
	killed := time.Now()
	if err := old.node.Shutdown(); err != nil {
		t.Fatalf("shutdown %s: %v", leader, err)
	}
	disc.remove(leader)
	delete(nodes, leader)
	next := tcpLeader(t, nodes, 10*time.Second)
	t.Logf("new leader %s %s after killing %s", next,
		time.Since(killed).Round(time.Millisecond), leader)

	// Restart it from its data dir on a new port: it keeps its state,
	// and the leader updates its address.
	nodes[leader] = startTCP(t, disc, leader, old.dir)
	if _, err := nodes[next].node.Apply(t.Context(), []byte("two")); err != nil {
		t.Fatalf("apply on %s: %v", next, err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for name, n := range nodes {
			for _, e := range []string{"one", "two"} {
				if !n.fsm.has(e) {
					return fmt.Errorf("%s has not applied %q", name, e)
				}
			}
		}
		return nil
	})
	if st := nodes[leader].node.Stats(); st.State != "follower" || !st.Voter {
		t.Errorf("restarted %s stats %v", leader, st)
	}
}

// TestDataDirInUse checks that a second manager on a data dir that a
// running one holds fails with a clear error instead of waiting for
// the bolt file lock forever.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first := startTCP(t, newFakeDiscovery(), "m1", dir)

	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BindAddr, cfg.RaftPort = "m2", dir, "127.0.0.1", 0
	cfg.Logger = testutil.Logger(t, hclog.Info)
	cfg.FSM = &testFSM{}

	type result struct {
		n   *Node
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		n, err := New(cfg)
		done <- result{n, err}
	}()

	var res result
	select {
	case res = <-done:
	case <-time.After(lockTimeout + 3*time.Second):
		t.Fatalf("New on a data dir in use still blocked after %s",
			time.Since(start))
	}
	if res.n != nil {
		_ = res.n.Shutdown()
	}
	if !errors.Is(res.err, ErrDataDirInUse) {
		t.Fatalf("New on a data dir in use: error %v, want %v",
			res.err, ErrDataDirInUse)
	}
	want := fmt.Sprintf("data dir %s is in use by another process", dir)
	if !strings.Contains(res.err.Error(), want) {
		t.Errorf("error %q does not say %q", res.err, want)
	}

	// The first manager is unharmed and the dir opens once it is gone.
	if err := first.node.Shutdown(); err != nil {
		t.Fatalf("shutdown m1: %v", err)
	}
	cfg.Name = "m1"
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New after m1 shut down: %v", err)
	}
	_ = n.Shutdown()
}
