package raftnode

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// reconcileInterval is the period of the leader's voter reconciliation.
const reconcileInterval = time.Second

// leaderLoop runs while this node is leader (ctx is cancelled when the
// term ends): it adds every alive manager that discovery knows, the
// Raft configuration lacks and that answers (answers), and runs autopilot for the term, which
// removes the voters dead for longer than Config.DeadServerCleanup
// (autopilot.go).
func (n *Node) leaderLoop(ctx context.Context) {
	if n.cfg.Discovery == nil {
		return
	}
	ap := n.startAutopilot(ctx)
	defer func() { <-ap.Stop() }()
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()

	for {
		// Take the change channel before reading, so that a change
		// during the pass triggers another one.
		changed := n.discoveryChanged()
		n.reconcile(ctx)
		n.reconciles.Add(1)

		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			// A manager that died may be due for removal at once
			// (a cleanup delay of a few seconds).
			ap.RemoveDeadServers()
		}
	}
}

// addCheckTimeout bounds the stats request reconcile makes before it
// adds a voter.
const addCheckTimeout = time.Second

// answers asks p for its Raft stats when discovery can (PeerStatser):
// gossip still shows a manager killed a moment ago alive, and one of
// another cluster's (a lost cluster's, seen through its workers' gossip)
// too, and a dead voter added to the configuration counts towards a
// quorum it cannot help: with two dead already, adding a third can leave
// the cluster without a leader.
func (n *Node) answers(ctx context.Context, p Peer) error {
	statser, ok := n.cfg.Discovery.(PeerStatser)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, addCheckTimeout)
	defer cancel()
	_, err := statser.PeerStats(ctx, p)
	return err
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
// configuration as voters, once they answer a stats request. A server already present under the same
// name and address is left alone; one under the same name at a new
// address gets its address updated (AddVoter does both).
//
// TODO: a voter restarted after an outage during which the log grew
// waits out hashicorp/raft's replication backoff (doubling up to about
// 10 s) before it receives what it missed; raft has no call to cut that
// wait short when gossip sees the manager again, and one upstream would
// let reconcile make it catch up at once.
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
			// old name, dead in gossip, is removed by autopilot.
			n.log.Warn("reconcile: address held by another server",
				"server", p.Name, "addr", p.RaftAddr, "holder", other)
			continue
		}
		if err := n.answers(ctx, p); err != nil {
			n.log.Debug("reconcile: not adding a manager that does not answer",
				"server", p.Name, "error", err)
			continue
		}
		if err := n.AddVoter(p.Name, p.RaftAddr); err != nil {
			n.log.Warn("reconcile: add voter failed", "error", err)
		}
	}
}
