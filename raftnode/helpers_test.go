package raftnode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// errRejected is what testFSM returns for an entry starting with "bad".
var errRejected = errors.New("entry rejected")

// testFSM keeps the applied entries as strings.
type testFSM struct {
	mu      sync.Mutex
	entries []string
}

func (f *testFSM) Apply(l *raft.Log) interface{} {
	if bytes.HasPrefix(l.Data, []byte("bad")) {
		return fmt.Errorf("entry %q: %w", l.Data, errRejected)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, string(l.Data))
	return nil
}

func (f *testFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &testSnapshot{append([]string(nil), f.entries...)}, nil
}

func (f *testFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var entries []string
	if err := json.NewDecoder(rc).Decode(&entries); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = entries
	return nil
}

func (f *testFSM) has(entry string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.entries {
		if e == entry {
			return true
		}
	}
	return false
}

type testSnapshot struct{ entries []string }

func (s *testSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.entries); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *testSnapshot) Release() {}

// fakeDiscovery is one shared view of the managers, as gossip would
// give every node. PeerHasState asks the peer's Node directly. Like
// gossip, it remembers the managers that went away, with since when.
type fakeDiscovery struct {
	mu      sync.Mutex
	peers   map[string]Peer
	nodes   map[string]*Node
	dead    map[string]time.Time
	changed chan struct{}
}

func newFakeDiscovery() *fakeDiscovery {
	return &fakeDiscovery{
		peers:   make(map[string]Peer),
		nodes:   make(map[string]*Node),
		dead:    make(map[string]time.Time),
		changed: make(chan struct{}),
	}
}

func (d *fakeDiscovery) DeadManagers() []DeadPeer {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DeadPeer, 0, len(d.dead))
	for name, since := range d.dead {
		out = append(out, DeadPeer{Name: name, Since: since})
	}
	return out
}

// deadSince returns when name was seen dead, false if it is not dead.
func (d *fakeDiscovery) deadSince(name string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	since, ok := d.dead[name]
	return since, ok
}

// kill marks name dead since the given time, as if gossip had seen it
// die then.
func (d *fakeDiscovery) kill(name string, since time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.peers, name)
	delete(d.nodes, name)
	d.dead[name] = since
	d.notify()
}

func (d *fakeDiscovery) Managers() []Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Peer, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p)
	}
	return out
}

func (d *fakeDiscovery) PeerHasState(_ context.Context, p Peer) (bool, error) {
	d.mu.Lock()
	n := d.nodes[p.Name]
	d.mu.Unlock()
	if n == nil {
		return false, fmt.Errorf("peer %q not reachable", p.Name)
	}
	return n.LastIndex() > 0, nil
}

// PeerStats answers for the running nodes, as a manager's gRPC port
// would.
func (d *fakeDiscovery) PeerStats(_ context.Context, p Peer) (PeerStats, error) {
	d.mu.Lock()
	n := d.nodes[p.Name]
	d.mu.Unlock()
	if n == nil {
		return PeerStats{}, fmt.Errorf("peer %q not reachable", p.Name)
	}
	st := n.Stats()
	return PeerStats{Term: st.GetTerm(), LastIndex: st.GetLastIndex(),
		LastContact: time.Duration(st.GetLastContact())}, nil
}

func (d *fakeDiscovery) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

func (d *fakeDiscovery) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// add announces p; n (which may be nil while starting) answers
// PeerHasState.
func (d *fakeDiscovery) add(p Peer, n *Node) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers[p.Name] = p
	delete(d.dead, p.Name)
	if n != nil {
		d.nodes[p.Name] = n
	}
	d.notify()
}

// hide marks name dead in gossip since the given time while its node
// keeps running and answering, as for a leader whose gossip is cut off
// from it.
func (d *fakeDiscovery) hide(name string, since time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.peers, name)
	d.dead[name] = since
	d.notify()
}

// remove marks name dead from now on.
func (d *fakeDiscovery) remove(name string) {
	d.kill(name, time.Now())
}

// testConfig is DefaultConfig with millisecond timings.
func testConfig(t *testing.T, name string) Config {
	c := DefaultConfig()
	c.Name = name
	c.DataDir = t.TempDir()
	c.BindAddr = "127.0.0.1"
	c.RaftPort = 0
	c.Logger = testutil.Logger(t, hclog.Info)
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotInterval = time.Second
	return c
}

// cluster is a set of nodes on raft's in-memory transport.
type cluster struct {
	t       *testing.T
	cleanup time.Duration // DeadServerCleanup of nodes started next; 0 = default
	disc    *fakeDiscovery
	nodes   map[string]*Node
	fsms    map[string]*testFSM
	trans   map[string]*raft.InmemTransport

	// wrap, when set, wraps the transport of nodes started next.
	wrap func(*raft.InmemTransport) raft.Transport
}

func newCluster(t *testing.T) *cluster {
	return &cluster{
		t:     t,
		disc:  newFakeDiscovery(),
		nodes: make(map[string]*Node),
		fsms:  make(map[string]*testFSM),
		trans: make(map[string]*raft.InmemTransport),
	}
}

// MakeCluster starts n nodes, n1..nN, with BootstrapExpect n, and waits
// for a leader.
func MakeCluster(t *testing.T, n int) *cluster {
	c := newCluster(t)
	for i := 1; i <= n; i++ {
		c.start(fmt.Sprintf("n%d", i), n)
	}
	c.waitLeader(nil)
	return c
}

// start starts name on the in-memory transport, connected to every
// node started before, and announces it in discovery.
func (c *cluster) start(name string, expect int) *Node {
	c.t.Helper()
	addr, tr := raft.NewInmemTransportWithTimeout(
		raft.ServerAddress("mem-"+name), 50*time.Millisecond)
	for _, other := range c.trans {
		tr.Connect(other.LocalAddr(), other)
		other.Connect(addr, tr)
	}
	c.trans[name] = tr

	cfg := testConfig(c.t, name)
	cfg.BootstrapExpect = expect
	if c.cleanup != 0 {
		cfg.DeadServerCleanup = c.cleanup
	}
	cfg.Discovery = c.disc
	cfg.FSM = &testFSM{}
	cfg.Transport = tr
	if c.wrap != nil {
		cfg.Transport = c.wrap(tr)
	}
	cfg.LogStore = raft.NewInmemStore()
	cfg.StableStore = raft.NewInmemStore()
	cfg.SnapshotStore = raft.NewInmemSnapshotStore()

	peer := Peer{Name: name, RaftAddr: string(addr)}
	c.disc.add(peer, nil)
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.t.Cleanup(func() { _ = n.Shutdown() })
	c.disc.add(peer, n)
	c.nodes[name] = n
	c.fsms[name] = cfg.FSM.(*testFSM)
	return n
}

// stop shuts name down and disconnects its transport.
func (c *cluster) stop(name string) {
	c.t.Helper()
	if err := c.nodes[name].Shutdown(); err != nil {
		c.t.Fatalf("shutdown %s: %v", name, err)
	}
	for other, tr := range c.trans {
		if other != name {
			tr.Disconnect(c.trans[name].LocalAddr())
		}
	}
	c.disc.remove(name)
	delete(c.nodes, name)
	delete(c.trans, name)
}

// waitLeader waits until every running node agrees on one leader that
// is not in exclude, and returns its name.
func (c *cluster) waitLeader(exclude map[string]bool) string {
	c.t.Helper()
	var leader string
	testutil.WaitFor(c.t, 5*time.Second, func() error {
		leader = ""
		for name, n := range c.nodes {
			l, _ := n.Leader()
			switch {
			case l == "":
				return fmt.Errorf("%s knows no leader", name)
			case exclude[l]:
				return fmt.Errorf("%s still follows %s", name, l)
			case leader != "" && l != leader:
				return fmt.Errorf("%s follows %s, others %s", name, l, leader)
			}
			leader = l
		}
		if !c.nodes[leader].IsLeader() {
			return fmt.Errorf("%s is not leader yet", leader)
		}
		return nil
	})
	return leader
}

// waitApplied waits until every running node's FSM holds entry.
func (c *cluster) waitApplied(entry string) {
	c.t.Helper()
	testutil.WaitFor(c.t, 5*time.Second, func() error {
		for name, f := range c.fsms {
			if c.nodes[name] != nil && !f.has(entry) {
				return fmt.Errorf("%s has not applied %q", name, entry)
			}
		}
		return nil
	})
}

// waitServers waits until every running node's configuration has
// exactly want as voters.
func (c *cluster) waitServers(want ...string) {
	c.t.Helper()
	testutil.WaitFor(c.t, 10*time.Second, func() error {
		for name, n := range c.nodes {
			servers, err := n.Servers()
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			var got []string
			for _, s := range servers {
				if s.Voter {
					got = append(got, s.Name)
				}
			}
			if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") {
				return fmt.Errorf("%s has voters %v, want %v", name, got, want)
			}
		}
		return nil
	})
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
