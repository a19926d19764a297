package raftnode

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// DefaultRaftPort is the Raft port of a manager.
const DefaultRaftPort = 7072

// DefaultDeadServerCleanup is how long a manager must stay dead in
// gossip before the leader removes it from the voter set: long enough
// for a reboot or an upgrade, which come back on their own.
const DefaultDeadServerCleanup = 5 * time.Minute

// DefaultTrailingLogs is the number of log entries kept after a
// snapshot: raft's own default, enough for a follower that was away for
// a restart to catch up without a whole snapshot.
const DefaultTrailingLogs = 10240

// Sentinel errors returned by this package. Errors from raft itself
// (raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrRaftShutdown, ...)
// come back wrapped with %w; compare them with errors.Is.
var (
	// ErrInvalidConfig wraps every Config.Validate failure.
	ErrInvalidConfig = errors.New("invalid raft config")
	// ErrUnknownServer is returned for a server name not in the Raft
	// configuration.
	ErrUnknownServer = errors.New("unknown raft server")
	// ErrDataDirInUse is returned by New when another process (or
	// another Node) holds the lock on DataDir's raft.db.
	ErrDataDirInUse = errors.New("in use by another process")
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// Name is this manager's name and its Raft server ID. Required.
	Name string
	// DataDir holds raft/raft.db (log and stable store) and
	// raft/snapshots. Required. One Node at a time: New fails with
	// ErrDataDirInUse while another holds it.
	DataDir string
	// BindAddr is the IP the Raft transport listens on and advertises;
	// it must not be unspecified (0.0.0.0), since peers dial it.
	BindAddr string
	// RaftPort is the Raft TCP port; 0 picks a free one (tests).
	RaftPort int

	// BootstrapExpect is the number of managers to wait for before
	// bootstrapping a new cluster. 0 with Join false bootstraps a
	// cluster of this node alone; 0 with Join true never bootstraps.
	BootstrapExpect int
	// Join says the manager was started to join an existing cluster:
	// with BootstrapExpect 0 it waits for a leader to add it.
	Join bool

	// FSM is the state machine. Required.
	FSM raft.FSM
	// Logger is the parent logger; nil discards logs.
	Logger hclog.Logger

	// HeartbeatTimeout is how long a follower waits without contact
	// from the leader before it starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without
	// reaching a quorum; at most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds the delay before a heartbeat carries the
	// commit index to followers.
	CommitTimeout time.Duration
	// SnapshotThreshold is the number of new log entries that triggers
	// a snapshot, checked every SnapshotInterval.
	SnapshotThreshold uint64
	// SnapshotInterval is the period of the snapshot check.
	SnapshotInterval time.Duration
	// SnapshotRetain is the number of snapshots kept on disk.
	SnapshotRetain int
	// TrailingLogs is the number of log entries kept after a snapshot.
	// A follower fewer entries behind catches up from the log; one
	// further behind, or a manager that is new or lost its data dir,
	// receives the whole snapshot instead. 0 keeps none.
	TrailingLogs uint64

	// Discovery lists the managers seen in gossip; nil means none but
	// this node.
	Discovery Discovery

	// DeadServerCleanup is how long a voter must have been dead in
	// discovery (see DeadManagerLister) before the leader removes it
	// from the Raft configuration; 0 disables the cleanup. The leader
	// never removes one so that fewer voters than
	// max(BootstrapExpect, ClusterMinVoters(), 1) remain, nor while more
	// than half of the other voters are dead in its view, nor one that
	// answers its stats requests (see PeerStatser and autopilot.go).
	DeadServerCleanup time.Duration

	// ClusterMinVoters, if set, is the cleanup floor the cluster's state
	// records, read on every cleanup pass: a leader started without
	// BootstrapExpect (added with Join alone) still keeps the floor the
	// cluster was bootstrapped with.
	ClusterMinVoters func() int

	// StreamLayer, if set, replaces the plain TCP stream layer on
	// BindAddr:RaftPort (the security step wraps it in TLS). Its Addr
	// is advertised to peers.
	StreamLayer raft.StreamLayer

	// Test hooks: when set they replace the network transport and the
	// on-disk stores.
	Transport     raft.Transport
	LogStore      raft.LogStore
	StableStore   raft.StableStore
	SnapshotStore raft.SnapshotStore
}

// DefaultConfig returns the timings for managers on one LAN. A follower
// starts an election after 1 to 2 HeartbeatTimeouts without contact, and
// an election on a LAN takes tens of milliseconds, so 300ms puts a new
// leader within about 650ms of the old one dying (bench/RESULTS.md has
// the measured figures). Name, DataDir, BindAddr and FSM must still be
// set.
func DefaultConfig() Config {
	return Config{
		RaftPort:           DefaultRaftPort,
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   30 * time.Second,
		SnapshotRetain:     2,
		TrailingLogs:       DefaultTrailingLogs,
		DeadServerCleanup:  DefaultDeadServerCleanup,
	}
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
// raft.ValidateConfig adds its own checks in New.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manager %q: %s", ErrInvalidConfig, c.Name,
			fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.DataDir == "":
		return bad("empty data dir")
	case c.FSM == nil:
		return bad("no FSM")
	case c.BootstrapExpect < 0:
		return bad("bootstrap expect %d is negative", c.BootstrapExpect)
	case c.BootstrapExpect > 1 && c.Discovery == nil:
		return bad("bootstrap expect %d without discovery",
			c.BootstrapExpect)
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 ||
		c.LeaderLeaseTimeout <= 0 || c.CommitTimeout <= 0:
		return bad("timeouts must be positive")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("leader lease %s longer than heartbeat timeout %s",
			c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("election timeout %s shorter than heartbeat timeout %s",
			c.ElectionTimeout, c.HeartbeatTimeout)
	case c.SnapshotInterval <= 0 || c.SnapshotThreshold == 0:
		return bad("snapshot interval and threshold must be positive")
	case c.SnapshotRetain < 1:
		return bad("snapshot retain %d below 1", c.SnapshotRetain)
	case c.DeadServerCleanup < 0:
		return bad("dead server cleanup %s is negative", c.DeadServerCleanup)
	}
	if c.Transport == nil && c.StreamLayer == nil {
		if err := checkBind(c.BindAddr, c.RaftPort); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// checkBind refuses an address peers could not dial back.
func checkBind(addr string, port int) error {
	if addr == "" {
		return errors.New("empty bind address")
	}
	if ip := net.ParseIP(addr); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("bind address %s is not advertisable", addr)
	}
	if port < 0 || port > 65535 {
		return fmt.Errorf("raft port %d out of range", port)
	}
	return nil
}

// raftConfig translates c into hashicorp/raft's config.
func (c Config) raftConfig(log hclog.Logger, notify chan bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.Name)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.Logger = log
	rc.NotifyCh = notify
	return rc
}
