package raftnode

import (
	"context"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// reconcileInterval is the period of the leader's voter reconciliation.
const reconcileInterval = time.Second

// leaderLoop runs while this node is leader (ctx is cancelled when the
// term ends): it adds every alive manager that discovery knows and the
// Raft configuration lacks, and removes the voters dead for longer than
// Config.DeadServerCleanup (see cleanupDead).
func (n *Node) leaderLoop(ctx context.Context) {
	if n.cfg.Discovery == nil {
		return
	}
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	held := make(map[string]bool) // dead voters kept, warned once a term

	for {
		// Take the change channel before reading, so that a change
		// during the pass triggers another one.
		changed := n.discoveryChanged()
		n.reconcile(ctx)
		n.cleanupDead(ctx, held)
		n.reconciles.Add(1)

		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// discoveryChanged returns the discovery change channel, or nil (never
// ready) when discovery cannot notify.
func (n *Node) discoveryChanged() <-chan struct{} {
	if dn, ok := n.cfg.Discovery.(DiscoveryNotifier); ok {
		return dn.Changed()
	}
	return nil
}

// reconcile adds the discovered managers missing from the Raft
// configuration as voters. A server already present under the same
// name and address is left alone; one under the same name at a new
// address gets its address updated (AddVoter does both).
func (n *Node) reconcile(ctx context.Context) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("reconcile: read configuration", "error", err)
		return
	}
	byID := make(map[raft.ServerID]raft.Server)
	byAddr := make(map[raft.ServerAddress]raft.ServerID)
	for _, s := range f.Configuration().Servers {
		byID[s.ID] = s
		byAddr[s.Address] = s.ID
	}

	for _, p := range n.cfg.Discovery.Managers() {
		if ctx.Err() != nil {
			return
		}
		id, addr := raft.ServerID(p.Name), raft.ServerAddress(p.RaftAddr)
		if s, ok := byID[id]; ok && s.Address == addr &&
			s.Suffrage == raft.Voter {
			continue
		}
		if other, ok := byAddr[addr]; ok && other != id {
			// A manager renamed at the same address gets in once the
			// old name, dead in gossip, is removed by cleanupDead.
			n.log.Warn("reconcile: address held by another server",
				"server", p.Name, "addr", p.RaftAddr, "holder", other)
			continue
		}
		if err := n.AddVoter(p.Name, p.RaftAddr); err != nil {
			n.log.Warn("reconcile: add voter failed", "error", err)
		}
	}
}

// cleanupDead removes from the Raft configuration the voters that
// discovery has seen dead for longer than Config.DeadServerCleanup,
// oldest first, within the limits of planCleanup. held carries the
// voters already reported as kept this term, so that each is warned
// about once.
//
// TODO: a leader whose own gossip is cut off from some managers (but
// not from more than half of them) sees them dead while Raft still
// reaches them; cross-checking raft's FailedHeartbeatObservation before
// removing would keep those.
func (n *Node) cleanupDead(ctx context.Context, held map[string]bool) {
	lister, ok := n.cfg.Discovery.(DeadManagerLister)
	if !ok || n.cfg.DeadServerCleanup <= 0 {
		return
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("dead server cleanup: read configuration", "error", err)
		return
	}
	var voters []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	alive := make(map[string]bool)
	for _, p := range n.cfg.Discovery.Managers() {
		alive[p.Name] = true
	}

	plan := planCleanup(cleanupInput{
		voters: voters, self: n.cfg.Name, alive: alive,
		dead: lister.DeadManagers(), now: time.Now(),
		after: n.cfg.DeadServerCleanup, floor: n.minVoters(),
	})
	for _, h := range plan.held {
		if !held[h.name] {
			held[h.name] = true
			n.log.Warn("dead server kept as voter", "server", h.name,
				"voters", len(voters), "min_voters", n.minVoters(),
				"reason", h.reason)
		}
	}
	for _, d := range plan.remove {
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("removing dead server", "server", d.Name,
			"dead_for", time.Since(d.Since).Round(time.Second),
			"cleanup_after", n.cfg.DeadServerCleanup)
		if err := n.RemoveServer(d.Name); err != nil {
			n.log.Warn("dead server cleanup: remove failed", "error", err)
			return
		}
		delete(held, d.Name)
	}
}

// minVoters is the floor of the dead-server cleanup.
func (n *Node) minVoters() int {
	return max(n.cfg.BootstrapExpect, 1)
}

// cleanupInput is what planCleanup decides on.
type cleanupInput struct {
	voters []string        // voter IDs in the Raft configuration
	self   string          // the leader, never removed
	alive  map[string]bool // managers alive in discovery
	dead   []DeadPeer      // managers dead in discovery
	now    time.Time
	after  time.Duration // DeadServerCleanup; <= 0 removes nothing
	floor  int           // fewest voters to keep
}

// cleanupPlan is planCleanup's answer.
type cleanupPlan struct {
	remove []DeadPeer  // to remove, in this order
	held   []heldVoter // dead long enough but kept by the limits
}

// heldVoter is a voter due for removal that planCleanup keeps.
type heldVoter struct{ name, reason string }

// planCleanup picks the voters to remove: dead (and not alive again)
// for at least after, oldest death first, while at least floor voters
// would remain and the dead voters are a minority that the remaining
// ones outnumber (autopilot's rule: of n voters at most (n-1)/2 may be
// failed), so that a leader cut off from the others in gossip removes
// nobody. Voters dead for less than after still count as failed.
func planCleanup(in cleanupInput) cleanupPlan {
	var plan cleanupPlan
	if in.after <= 0 {
		return plan
	}
	isVoter := make(map[string]bool, len(in.voters))
	for _, v := range in.voters {
		isVoter[v] = true
	}
	failed := 0
	var due []DeadPeer
	seen := make(map[string]bool)
	for _, d := range in.dead {
		if !isVoter[d.Name] || d.Name == in.self || in.alive[d.Name] ||
			seen[d.Name] {
			continue
		}
		seen[d.Name] = true
		failed++
		if in.now.Sub(d.Since) >= in.after {
			due = append(due, d)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].Since.Equal(due[j].Since) {
			return due[i].Since.Before(due[j].Since)
		}
		return due[i].Name < due[j].Name
	})

	voters := len(in.voters)
	for _, d := range due {
		switch {
		case voters-1 < in.floor:
			plan.held = append(plan.held, heldVoter{d.Name,
				"would leave fewer voters than bootstrap-expect (min 1)"})
			continue
		case failed > (voters-1)/2:
			plan.held = append(plan.held, heldVoter{d.Name,
				"more than half of the other voters are dead in this leader's view"})
			continue
		}
		plan.remove = append(plan.remove, d)
		voters--
		failed--
	}
	return plan
}
