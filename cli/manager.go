package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Manager timings.
const (
	// shutdownTimeout bounds the graceful stop of the API servers.
	shutdownTimeout = 5 * time.Second
	// leaveTimeout bounds the gossip leave broadcast.
	leaveTimeout = 3 * time.Second
)

func managerCommand() *cli.Command {
	host, _ := os.Hostname()
	return &cli.Command{
		Name:  "manager",
		Usage: "run a manager: Raft, the API and the rollout engine",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: host,
				Usage: "node name, unique in the cluster"},
			&cli.StringFlag{Name: "data-dir", Required: true,
				Usage: "directory for the Raft log and snapshots"},
			&cli.StringFlag{Name: "bind", Value: "127.0.0.1",
				Usage: "IP to listen on and advertise"},
			&cli.IntFlag{Name: "http-port", Value: 7070, Usage: "HTTP API port"},
			&cli.IntFlag{Name: "rpc-port", Value: 7071, Usage: "gRPC port"},
			&cli.IntFlag{Name: "raft-port", Value: raftnode.DefaultRaftPort,
				Usage: "Raft port"},
			&cli.IntFlag{Name: "gossip-port", Value: gossip.DefaultPort,
				Usage: "gossip port (TCP and UDP)"},
			&cli.IntFlag{Name: "bootstrap-expect",
				Usage: "number of managers to wait for before founding a cluster"},
			&cli.StringSliceFlag{Name: "join",
				Usage: "another manager's gossip address, ip or ip:port " +
					"(default port 7073); repeat or separate with commas"},
			&cli.Uint64Flag{Name: "snapshot-threshold",
				Value: raftnode.DefaultConfig().SnapshotThreshold,
				Usage: "new Raft log entries that trigger a snapshot"},
			&cli.DurationFlag{Name: "snapshot-interval",
				Value: raftnode.DefaultConfig().SnapshotInterval,
				Usage: "how often the snapshot threshold is checked"},
			&cli.IntFlag{Name: "snapshot-retain",
				Value: raftnode.DefaultConfig().SnapshotRetain,
				Usage: "snapshots kept on disk"},
			&cli.Uint64Flag{Name: "snapshot-trailing-logs",
				Value: raftnode.DefaultConfig().TrailingLogs,
				Usage: "Raft log entries kept after a snapshot: a manager fewer " +
					"entries behind catches up from the log, one further behind " +
					"(or new, or with an emptied data dir) receives the whole snapshot"},
			&cli.IntFlag{Name: "raft-multiplier", Value: 1,
				Usage: "scale Raft's timings (heartbeat and election timeout " +
					"300ms, leader lease 150ms) by 1 to 10: higher values make " +
					"elections rarer on slow or overloaded machines and links, " +
					"and failover slower by the same factor"},
			&cli.DurationFlag{Name: "dead-manager-cleanup",
				Value: raftnode.DefaultConfig().DeadServerCleanup,
				Usage: "remove a manager dead in gossip this long from the voters, " +
					"never going below --bootstrap-expect voters (or 1); 0 disables"},
			logLevelFlag(),
		},
		Action: action(runManager),
	}
}

// managerFlags are the manager's settings after flag parsing.
type managerFlags struct {
	name, dataDir, bind                     string
	httpPort, rpcPort, raftPort, gossipPort int
	bootstrapExpect                         int
	join                                    []string
	snapshots                               snapshotSettings
	raftMultiplier                          int
	deadManagerCleanup                      time.Duration
}

// maxRaftMultiplier bounds --raft-multiplier: at 10 a new leader takes
// about 6s, longer than workers wait before they call a silent manager
// out of touch.
const maxRaftMultiplier = 10

// checkRaftMultiplier refuses a --raft-multiplier out of range.
func checkRaftMultiplier(m int) error {
	if m < 1 || m > maxRaftMultiplier {
		return fmt.Errorf("manager: --raft-multiplier %d must be between 1 and %d",
			m, maxRaftMultiplier)
	}
	return nil
}

// scaleRaft multiplies the Raft timeouts of rc by m.
func scaleRaft(rc *raftnode.Config, m int) {
	d := time.Duration(m)
	rc.HeartbeatTimeout *= d
	rc.ElectionTimeout *= d
	rc.LeaderLeaseTimeout *= d
}

// snapshotSettings are the manager's Raft snapshot flags.
type snapshotSettings struct {
	threshold    uint64
	interval     time.Duration
	retain       int
	trailingLogs uint64
}

// check refuses values raftnode would refuse, naming the flag.
func (s snapshotSettings) check() error {
	switch {
	case s.threshold == 0:
		return errors.New("manager: --snapshot-threshold must be at least 1")
	case s.interval <= 0:
		return fmt.Errorf("manager: --snapshot-interval %s must be positive", s.interval)
	case s.retain < 1:
		return fmt.Errorf("manager: --snapshot-retain %d must be at least 1", s.retain)
	}
	return nil
}

// apply sets the snapshot fields of a Raft config.
func (s snapshotSettings) apply(rc *raftnode.Config) {
	rc.SnapshotThreshold = s.threshold
	rc.SnapshotInterval = s.interval
	rc.SnapshotRetain = s.retain
	rc.TrailingLogs = s.trailingLogs
}

func runManager(c *cli.Context) error {
	if _, err := args(c, 0, "[flags]"); err != nil {
		return err
	}
	log, err := newLogger(c, "manager")
	if err != nil {
		return err
	}
	f := managerFlags{
		name: c.String("name"), dataDir: c.String("data-dir"), bind: c.String("bind"),
		httpPort: c.Int("http-port"), rpcPort: c.Int("rpc-port"),
		raftPort: c.Int("raft-port"), gossipPort: c.Int("gossip-port"),
		bootstrapExpect: c.Int("bootstrap-expect"),
		join:            splitList(c.StringSlice("join")),
		snapshots: snapshotSettings{
			threshold:    c.Uint64("snapshot-threshold"),
			interval:     c.Duration("snapshot-interval"),
			retain:       c.Int("snapshot-retain"),
			trailingLogs: c.Uint64("snapshot-trailing-logs"),
		},
		raftMultiplier:     c.Int("raft-multiplier"),
		deadManagerCleanup: c.Duration("dead-manager-cleanup"),
	}
	if err := checkNodeName("manager", f.name); err != nil {
		return err
	}
	if net.ParseIP(f.bind) == nil {
		return fmt.Errorf("manager: bind address %q is not an IP", f.bind)
	}
	if err := f.snapshots.check(); err != nil {
		return err
	}
	if err := checkRaftMultiplier(f.raftMultiplier); err != nil {
		return err
	}
	if f.deadManagerCleanup < 0 {
		return fmt.Errorf("manager: --dead-manager-cleanup %s must not be negative",
			f.deadManagerCleanup)
	}

	m, err := startManager(f, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("shutting down")
	return m.shutdown()
}

// manager is a running manager's parts, for shutdown.
type manager struct {
	log    hclog.Logger
	pool   *gossip.Pool
	raft   *raftnode.Node
	rpc    *rpc.Server
	engine *deploy.Engine

	stopLeadership context.CancelFunc
	leadershipDone chan struct{}
}

// startManager builds and starts the parts in dependency order: the
// state machine, gossip (Raft discovers the other managers there), Raft,
// the rollout engine (off), the API servers (which peers ask for Raft
// stats while bootstrapping), and last the leadership follower that
// switches the engine on and off.
func startManager(f managerFlags, log hclog.Logger) (*manager, error) {
	m := &manager{log: log}
	machine := fsm.New(log)

	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr, gc.Port, gc.Logger = f.name, f.bind, f.gossipPort, log
	gc.Meta = gossip.Meta{
		Role: pb.RoleManager, Name: f.name, Address: f.bind,
		RPCPort: f.rpcPort, HTTPPort: f.httpPort, RaftPort: f.raftPort,
	}
	pool, err := gossip.New(gc)
	if err != nil {
		return nil, err
	}
	m.pool = pool

	rc := raftnode.DefaultConfig()
	rc.Name, rc.DataDir, rc.BindAddr, rc.RaftPort = f.name, f.dataDir, f.bind, f.raftPort
	rc.BootstrapExpect, rc.Join = f.bootstrapExpect, len(f.join) > 0
	rc.FSM, rc.Logger = machine, log
	f.snapshots.apply(&rc)
	scaleRaft(&rc, f.raftMultiplier)
	rc.DeadServerCleanup = f.deadManagerCleanup
	rc.ClusterMinVoters = func() int { return int(machine.State().Meta().GetMinVoters()) }
	disc := &gossipDiscovery{pool: pool, dial: rpc.Dial}
	rc.Discovery = disc
	m.raft, err = raftnode.New(rc)
	if err != nil {
		m.shutdown()
		return nil, err
	}
	// Join the others only now: a manager whose data dir another
	// process holds fails above without ever showing up in their pool.
	if len(f.join) > 0 {
		pool.RetryJoin(context.Background(), f.join)
	}
	// RetryJoin stops at its first success. A manager cut off from the
	// others for longer than memberlist gossips to the dead (30s) would
	// then never see them alive again, nor they it, once the partition
	// heals: it could not vote, and a leader whose dead-manager cleanup
	// removed it would never add it back. So, for the life of the pool,
	// join again every few seconds the managers it knows of (seen in
	// gossip, or named by --join) that are not alive in its gossip, as
	// workers do (agent.rejoinManagers). Shutdown stops it.
	pool.Rejoin(context.Background(), pb.RoleManager, f.join)

	// The engine is built (disabled) before the API, which reports its
	// counters in this manager's status.
	m.engine = deploy.New(deploy.Config{
		Logger: log, Proposer: m.raft, Store: machine.State(), Liveness: pool,
		MinVoters: f.bootstrapExpect,
	})
	m.rpc, err = rpc.New(rpc.Config{
		Name: f.name, Logger: log, FSM: machine, Raft: m.raft,
		RPCAddr:     hostPort(f.bind, f.rpcPort),
		HTTPAddr:    hostPort(f.bind, f.httpPort),
		PeerRPCAddr: disc.ManagerRPCAddr,
		Engine:      m.engine.Stats,
	})
	if err == nil {
		err = m.rpc.Start()
	}
	if err != nil {
		m.shutdown()
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	m.stopLeadership, m.leadershipDone = cancel, make(chan struct{})
	lf := &leadershipFollower{raft: m.raft, engine: m.engine, log: log}
	go func() {
		defer close(m.leadershipDone)
		lf.run(ctx)
	}()
	return m, nil
}

// shutdown stops what was started, in reverse: the engine first so that
// nothing is proposed into a closing Raft, then the API, Raft, and last
// gossip, leaving so that the others do not wait to call us dead.
func (m *manager) shutdown() error {
	if m.stopLeadership != nil {
		m.stopLeadership()
		<-m.leadershipDone
	}
	if m.engine != nil {
		m.engine.SetEnabled(false)
	}

	// The first error is returned, on one line; the others are logged.
	var first error
	keep := func(err error) {
		if err == nil {
			return
		}
		if first == nil {
			first = err
			return
		}
		m.log.Error("shutdown", "error", err)
	}
	if m.rpc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		keep(m.rpc.Shutdown(ctx))
		cancel()
	}
	if m.raft != nil {
		keep(m.raft.Shutdown())
	}
	if m.pool != nil {
		if err := m.pool.Leave(leaveTimeout); err != nil {
			m.log.Warn("gossip leave failed", "error", err)
		}
		keep(m.pool.Shutdown())
	}
	return first
}
