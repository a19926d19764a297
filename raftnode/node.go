package raftnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// changeTimeout bounds how long a membership change may wait to be
// enqueued on the leader.
const changeTimeout = 5 * time.Second

// lockTimeout bounds the wait for the lock on raft.db, which another
// manager on the same data dir holds for as long as it runs.
const lockTimeout = 2 * time.Second

// logCacheSize is the number of recent log entries kept in memory in
// front of the bolt store.
const logCacheSize = 512

// Node is this manager's Raft replica. Create it with New; it runs
// until Shutdown. Its methods are safe for concurrent use.
type Node struct {
	cfg  Config
	log  hclog.Logger
	raft *raft.Raft
	addr raft.ServerAddress

	bolt *raftboltdb.BoltStore // nil when the test hooks replace it

	notifyCh     chan bool // from raft, read only by watchLeadership
	leadershipCh chan bool // to the single consumer of LeadershipCh

	// reconciles counts the leader's reconcile passes, for tests.
	reconciles atomic.Uint64
	// cleanupPasses counts autopilot's dead-server passes, for tests.
	cleanupPasses atomic.Uint64

	// reads is the state of ConsistentRead (read.go).
	reads readState

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	shutdownErr  error
	wg           sync.WaitGroup
}

// Server is one member of the Raft configuration.
type Server struct {
	Name    string
	Address string
	Voter   bool
}

// New opens the stores in cfg.DataDir, starts the transport and Raft,
// and starts the bootstrap logic in the background (see Config's
// BootstrapExpect and Join). An existing Raft state is never
// bootstrapped again. A data dir that another process holds fails
// within lockTimeout with an error wrapping ErrDataDirInUse.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	n := &Node{
		cfg:          cfg,
		log:          cfg.Logger.Named("raft").With("node", cfg.Name),
		notifyCh:     make(chan bool, 8),
		leadershipCh: make(chan bool, 8),
		shutdownCh:   make(chan struct{}),
	}

	// The stores first: a data dir in use fails before a port is bound.
	logs, stable, snaps, err := n.stores()
	if err != nil {
		n.closeAll(nil)
		return nil, err
	}

	trans, err := n.transport()
	if err != nil {
		n.closeAll(nil)
		return nil, err
	}
	n.addr = trans.LocalAddr()

	// Read before NewRaft, which may restore a snapshot.
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.closeAll(trans)
		return nil, fmt.Errorf("manager %q: read raft state: %w",
			cfg.Name, err)
	}

	rc := cfg.raftConfig(n.log, n.notifyCh)
	n.raft, err = raft.NewRaft(rc, cfg.FSM, logs, stable, snaps, trans)
	if err != nil {
		n.closeAll(trans)
		return nil, fmt.Errorf("manager %q: start raft: %w", cfg.Name, err)
	}
	n.log.Info("raft started", "addr", n.addr, "existing_state", hasState)

	n.goRun(n.watchLeadership)
	if !hasState {
		n.goRun(n.bootstrap)
	}
	return n, nil
}

// transport returns the test hook or a network transport over
// cfg.StreamLayer or plain TCP.
func (n *Node) transport() (raft.Transport, error) {
	if n.cfg.Transport != nil {
		return n.cfg.Transport, nil
	}
	stream := n.cfg.StreamLayer
	if stream == nil {
		var err error
		stream, err = NewTCPStreamLayer(n.cfg.BindAddr, n.cfg.RaftPort)
		if err != nil {
			return nil, fmt.Errorf("manager %q: %w", n.cfg.Name, err)
		}
	}
	return newNetworkTransport(stream, n.log), nil
}

// stores returns the test hooks or the bolt and file stores under
// DataDir/raft.
func (n *Node) stores() (raft.LogStore, raft.StableStore,
	raft.SnapshotStore, error) {
	c := n.cfg
	dir := filepath.Join(c.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("manager %q: %w", c.Name, err)
	}

	logs, stable := c.LogStore, c.StableStore
	if logs == nil || stable == nil {
		b, err := raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(dir, "raft.db"),
			BoltOptions: &bbolt.Options{Timeout: lockTimeout},
		})
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, nil, nil, fmt.Errorf("manager %q: data dir %s is %w",
				c.Name, c.DataDir, ErrDataDirInUse)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("manager %q: open raft.db: %w",
				c.Name, err)
		}
		n.bolt = b
		if logs == nil {
			cached, err := raft.NewLogCache(logCacheSize, b)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("manager %q: %w", c.Name, err)
			}
			logs = cached
		}
		if stable == nil {
			stable = b
		}
	}

	snaps := c.SnapshotStore
	if snaps == nil {
		var err error
		snaps, err = raft.NewFileSnapshotStoreWithLogger(dir,
			c.SnapshotRetain, n.log.Named("snapshot"))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("manager %q: snapshot store: %w",
				c.Name, err)
		}
	}
	return logs, stable, snaps, nil
}

// closeAll releases what New opened before a failure; trans may be nil.
func (n *Node) closeAll(trans raft.Transport) {
	if c, ok := trans.(raft.WithClose); ok {
		_ = c.Close()
	}
	if n.bolt != nil {
		_ = n.bolt.Close()
	}
}

// goRun runs f in a goroutine that Shutdown waits for.
func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Shutdown stops Raft, the background loops and the stores. It does not
// leave the cluster: the others see this server as unreachable. Safe to
// call more than once; later calls return the first result.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		close(n.shutdownCh)

		// Raft closes the transport itself.
		err := n.raft.Shutdown().Error()
		n.wg.Wait()
		if n.bolt != nil {
			err = errors.Join(err, n.bolt.Close())
		}
		if err != nil {
			n.shutdownErr = fmt.Errorf("manager %q: shutdown: %w",
				n.cfg.Name, err)
		}
		n.log.Info("raft stopped")
	})
	return n.shutdownErr
}

// IsLeader reports whether this node is the leader right now.
func (n *Node) IsLeader() bool {
	return n.raft.State() == raft.Leader
}

// Leader returns the name and Raft address of the leader this node
// knows of, or two empty strings.
func (n *Node) Leader() (name, raftAddr string) {
	addr, id := n.raft.LeaderWithID()
	return string(id), string(addr)
}

// Addr returns the Raft address this node advertises.
func (n *Node) Addr() string {
	return string(n.addr)
}

// LeadershipCh returns the channel that receives true when this node
// becomes leader and false when it stops being leader, in order. It
// has a single consumer: two readers would each miss transitions.
// Values queue without bound (two per term) until read, so Raft is
// never blocked by a slow consumer.
func (n *Node) LeadershipCh() <-chan bool {
	return n.leadershipCh
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("manager %q: raft configuration: %w",
			n.cfg.Name, err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{
			Name:    string(s.ID),
			Address: string(s.Address),
			Voter:   s.Suffrage == raft.Voter,
		})
	}
	return out, nil
}

// AddVoter adds name at addr as a voter, or updates its address, or
// promotes it; it must run on the leader (else raft.ErrNotLeader).
func (n *Node) AddVoter(name, addr string) error {
	f := n.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0,
		changeTimeout)
	if err := f.Error(); err != nil {
		return fmt.Errorf("add voter %q at %s: %w", name, addr, err)
	}
	n.log.Info("added voter", "server", name, "addr", addr)
	return nil
}

// RemoveServer removes name from the Raft configuration; it must run on
// the leader.
func (n *Node) RemoveServer(name string) error {
	f := n.raft.RemoveServer(raft.ServerID(name), 0, changeTimeout)
	if err := f.Error(); err != nil {
		return fmt.Errorf("remove server %q: %w", name, err)
	}
	n.log.Info("removed server", "server", name)
	return nil
}

// TransferLeadership hands leadership to the voter name; it must run on
// the leader. ErrUnknownServer if name is not in the configuration.
func (n *Node) TransferLeadership(name string) error {
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.Name != name {
			continue
		}
		f := n.raft.LeadershipTransferToServer(raft.ServerID(s.Name),
			raft.ServerAddress(s.Address))
		if err := f.Error(); err != nil {
			return fmt.Errorf("transfer leadership to %q: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("transfer leadership to %q: %w", name,
		ErrUnknownServer)
}

// Stats returns this node's own view of itself. LastContact is 0 on
// the leader and -1 if this node has never heard from a leader.
func (n *Node) Stats() *pb.ManagerStatus {
	st := &pb.ManagerStatus{
		Name:         n.cfg.Name,
		Address:      string(n.addr),
		State:        strings.ToLower(n.raft.State().String()),
		Term:         n.raft.CurrentTerm(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
	}
	switch last := n.raft.LastContact(); {
	case n.IsLeader():
		st.LastContact = 0
	case last.IsZero():
		st.LastContact = -1
	default:
		st.LastContact = int64(time.Since(last))
	}

	if servers, err := n.Servers(); err == nil {
		for _, s := range servers {
			if s.Name == n.cfg.Name {
				st.Voter = s.Voter
			}
		}
	}
	return st
}

// LastIndex returns the index of the last entry in this node's log
// (0 for a node with no Raft state); the manager wiring serves it to
// peers deciding whether to bootstrap.
func (n *Node) LastIndex() uint64 {
	return n.raft.LastIndex()
}

// watchLeadership forwards raft's leadership notifications to the
// LeadershipCh consumer without ever blocking raft, and runs the
// leader-only loop for each term.
func (n *Node) watchLeadership() {
	var queue []bool
	stopTerm := func() {}
	defer func() { stopTerm() }()

	for {
		var out chan bool
		var next bool
		if len(queue) > 0 {
			out, next = n.leadershipCh, queue[0]
		}

		select {
		case <-n.shutdownCh:
			return
		case out <- next:
			queue = queue[1:]
		case leader := <-n.notifyCh:
			queue = append(queue, leader)

			// End the previous term's loop before starting another.
			stopTerm()
			stopTerm = func() {}
			if !leader {
				n.log.Info("lost leadership")
				continue
			}
			n.log.Info("gained leadership")
			stopTerm = n.startTerm()
		}
	}
}

// startTerm runs leaderLoop with a fresh context and returns a function
// that cancels it and waits for it to return.
func (n *Node) startTerm() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.leaderLoop(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
