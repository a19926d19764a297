package raftnode

import (
	"context"
	"strconv"
	"sync"
	"time"

	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/hashicorp/raft"
)

// The leader's dead-manager cleanup is hashicorp/raft-autopilot, run for
// each term by leaderLoop. Autopilot removes the voters its delegate
// reports failed, never so that fewer than MinQuorum voters remain nor
// more than (n-1)/2 of n voters in one pass. The delegate below decides
// what failed means here: dead in gossip for at least
// Config.DeadServerCleanup and not answering over gRPC either. It also
// keeps every voter while more than half of the others look dead, as a
// leader cut off from most managers in gossip (but not in Raft) would
// otherwise remove live ones.

const (
	// autopilotInterval is the period of autopilot's removal pass and
	// of its state update (which asks every manager for its stats).
	autopilotInterval = time.Second

	// reachedRecently is how long a manager that answered a stats
	// request counts as alive, whatever gossip says. A few update
	// intervals, so that one lost answer does not make it failed.
	reachedRecently = 3 * autopilotInterval

	// stabilization is autopilot's ServerStabilizationTime. Managers
	// join as voters, so it only shapes autopilot's health view.
	stabilization = 10 * time.Second
)

// PeerStatser is optionally implemented by a Discovery that can ask a
// manager for its Raft stats (pb.Peer/RaftStats over gRPC in the manager
// wiring). With it, autopilot's health view has every manager's log
// position, and a manager that answers is never removed as dead.
type PeerStatser interface {
	PeerStats(ctx context.Context, p Peer) (PeerStats, error)
}

// PeerStats is what a manager reports of its Raft state.
type PeerStats struct {
	Term        uint64
	LastIndex   uint64
	LastContact time.Duration // since it last heard from a leader
}

// apDelegate is autopilot's view of this node's managers for one term.
type apDelegate struct {
	n *Node

	mu      sync.Mutex
	reached map[raft.ServerID]time.Time // last stats answer
	held    map[raft.ServerID]bool      // kept voters, warned once
	state   *autopilot.State
}

// startAutopilot runs autopilot until ctx ends or Stop is called.
func (n *Node) startAutopilot(ctx context.Context) *autopilot.Autopilot {
	d := &apDelegate{n: n,
		reached: make(map[raft.ServerID]time.Time),
		held:    make(map[raft.ServerID]bool)}
	ap := autopilot.New(n.raft, d,
		autopilot.WithLogger(n.log.Named("autopilot")),
		autopilot.WithReconcileInterval(autopilotInterval),
		autopilot.WithUpdateInterval(autopilotInterval),
		autopilot.WithPromoter(&guardPromoter{Promoter: autopilot.DefaultPromoter(), d: d}))
	ap.Start(ctx)
	return ap
}

// AutopilotConfig is the configuration autopilot reads on every pass.
func (d *apDelegate) AutopilotConfig() *autopilot.Config {
	return &autopilot.Config{
		CleanupDeadServers:      d.n.cfg.DeadServerCleanup > 0,
		LastContactThreshold:    2 * d.n.cfg.HeartbeatTimeout,
		MaxTrailingLogs:         250,
		MinQuorum:               uint(d.n.minVoters()),
		ServerStabilizationTime: stabilization,
	}
}

// NotifyState keeps autopilot's latest view.
func (d *apDelegate) NotifyState(s *autopilot.State) {
	d.mu.Lock()
	d.state = s
	d.mu.Unlock()
}

// FetchServerStats asks each manager for its Raft stats, at once and
// within ctx (autopilot gives half its update interval).
func (d *apDelegate) FetchServerStats(ctx context.Context,
	servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	statser, _ := d.n.cfg.Discovery.(PeerStatser)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, s := range servers {
		if id == raft.ServerID(d.n.cfg.Name) {
			out[id] = d.n.ownStats()
			continue
		}
		if statser == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := statser.PeerStats(ctx, Peer{Name: s.Name, RaftAddr: string(s.Address)})
			if err != nil {
				return
			}
			mu.Lock()
			out[id] = &autopilot.ServerStats{LastContact: st.LastContact,
				LastTerm: st.Term, LastIndex: st.LastIndex}
			mu.Unlock()
			d.mu.Lock()
			d.reached[id] = time.Now()
			d.mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// ownStats is the leader's own entry in autopilot's state.
func (n *Node) ownStats() *autopilot.ServerStats {
	term, _ := strconv.ParseUint(n.raft.Stats()["last_log_term"], 10, 64)
	return &autopilot.ServerStats{LastTerm: term, LastIndex: n.raft.LastIndex()}
}

// KnownServers lists every server of the Raft configuration (one left
// out would be removed by autopilot as stale), failed if statusOf says
// so.
func (d *apDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	f := d.n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		// Nothing known removes nothing: autopilot skips the pass on
		// its own read of the configuration failing as well.
		d.n.log.Warn("autopilot: read configuration", "error", err)
		return nil
	}
	in := d.cleanupView(f.Configuration())
	out := make(map[raft.ServerID]*autopilot.Server, len(f.Configuration().Servers))
	for _, s := range f.Configuration().Servers {
		out[s.ID] = &autopilot.Server{
			ID: s.ID, Name: string(s.ID), Address: s.Address,
			NodeStatus:  in.statusOf(string(s.ID)),
			RaftVersion: raft.ProtocolVersionMax,
			IsLeader:    string(s.ID) == d.n.cfg.Name,
			// Every manager is meant to vote; autopilot counts only
			// those of this type towards its removal limits.
			NodeType: autopilot.NodeVoter,
		}
	}
	return out
}

// RemoveFailedServer removes a voter autopilot found failed.
func (d *apDelegate) RemoveFailedServer(s *autopilot.Server) {
	d.n.log.Warn("removing dead server", "server", s.Name,
		"cleanup_after", d.n.cfg.DeadServerCleanup)
	if err := d.n.RemoveServer(s.Name); err != nil {
		d.n.log.Warn("dead server cleanup: remove failed", "server", s.Name, "error", err)
	}
}

// cleanupView gathers what statusOf and keep decide on.
func (d *apDelegate) cleanupView(conf raft.Configuration) cleanupInput {
	in := cleanupInput{self: d.n.cfg.Name, alive: make(map[string]bool),
		dead: make(map[string]time.Time), reached: make(map[string]time.Time),
		now: time.Now(), after: d.n.cfg.DeadServerCleanup, floor: d.n.minVoters()}
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			in.voters = append(in.voters, string(s.ID))
		}
	}
	for _, p := range d.n.cfg.Discovery.Managers() {
		in.alive[p.Name] = true
	}
	if lister, ok := d.n.cfg.Discovery.(DeadManagerLister); ok {
		for _, p := range lister.DeadManagers() {
			in.dead[p.Name] = p.Since
		}
	}
	d.mu.Lock()
	for id, at := range d.reached {
		in.reached[string(id)] = at
	}
	d.mu.Unlock()
	return in
}

// warnHeld logs once a term that a failed voter stays, and why.
func (d *apDelegate) warnHeld(name, reason string, voters int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held[raft.ServerID(name)] {
		return
	}
	d.held[raft.ServerID(name)] = true
	d.n.log.Warn("dead server kept as voter", "server", name, "voters", voters,
		"min_voters", d.n.minVoters(), "reason", reason)
}

// guardPromoter is autopilot's default promoter with the removal limits
// of cleanupInput.keep applied to the failed servers.
type guardPromoter struct {
	autopilot.Promoter
	d *apDelegate
}

func (p *guardPromoter) FilterFailedServerRemovals(c *autopilot.Config,
	s *autopilot.State, failed *autopilot.FailedServers) *autopilot.FailedServers {
	p.d.n.cleanupPasses.Add(1)
	failed = p.Promoter.FilterFailedServerRemovals(c, s, failed)
	f := p.d.n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return &autopilot.FailedServers{}
	}
	in := p.d.cleanupView(f.Configuration())
	kept := &autopilot.FailedServers{FailedNonVoters: failed.FailedNonVoters}
	majority := in.keep()
	for i, s := range failed.FailedVoters {
		switch {
		case majority != "":
			p.d.warnHeld(s.Name, majority, len(in.voters))
		case len(in.voters)-i-1 < in.floor:
			// Autopilot's MinQuorum would keep it; say so once.
			p.d.warnHeld(s.Name, "would leave fewer voters than bootstrap-expect",
				len(in.voters))
		default:
			kept.FailedVoters = append(kept.FailedVoters, s)
		}
	}
	// Stale voters (in the configuration, unknown to KnownServers) do
	// not occur, as KnownServers lists the whole configuration; a
	// stale voter would be a bug here, so it is kept too.
	kept.StaleNonVoters = failed.StaleNonVoters
	return kept
}

// minVoters is the floor of the dead-server cleanup: this node's
// BootstrapExpect or the cluster's recorded floor, whichever is higher.
func (n *Node) minVoters() int {
	floor := max(n.cfg.BootstrapExpect, 1)
	if n.cfg.ClusterMinVoters != nil {
		floor = max(floor, n.cfg.ClusterMinVoters())
	}
	return floor
}

// cleanupInput is what decides whether a voter is failed and whether
// failed voters may go.
type cleanupInput struct {
	voters  []string             // voter IDs in the Raft configuration
	self    string               // the leader, never failed
	alive   map[string]bool      // managers alive in discovery
	dead    map[string]time.Time // managers dead in discovery, since when
	reached map[string]time.Time // last stats answer of each manager
	now     time.Time
	after   time.Duration // DeadServerCleanup; <= 0 fails nobody
	floor   int           // fewest voters to keep
}

// statusOf is name's status for autopilot: failed once discovery has
// seen it dead for at least after and it has not answered a stats
// request for reachedRecently; alive otherwise, including while the
// delay runs (autopilot would remove an unknown one).
func (in cleanupInput) statusOf(name string) autopilot.NodeStatus {
	since, dead := in.dead[name]
	switch {
	case in.after <= 0, name == in.self, in.alive[name], !dead,
		in.now.Sub(since) < in.after,
		in.now.Sub(in.reached[name]) < reachedRecently:
		return autopilot.NodeAlive
	}
	return autopilot.NodeFailed
}

// keep returns why no failed voter may be removed now, or "" if they
// may (autopilot applies the floor and its own majority rule on top):
// while more than half of the other voters are dead in discovery
// (however briefly), this leader is more likely cut off than they are
// dead.
func (in cleanupInput) keep() string {
	failed := 0
	for _, v := range in.voters {
		if _, dead := in.dead[v]; dead && v != in.self && !in.alive[v] {
			failed++
		}
	}
	if failed > (len(in.voters)-1)/2 {
		return "more than half of the other voters are dead in this leader's view"
	}
	return ""
}
