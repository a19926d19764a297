package raftnode

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// bootstrapRetry is the pause between bootstrap-expect checks.
	bootstrapRetry = 500 * time.Millisecond
	// peerStateTimeout bounds one PeerHasState call.
	peerStateTimeout = 2 * time.Second
)

// bootstrap runs once after start on a node without Raft state:
//   - BootstrapExpect 0, Join false: bootstrap a cluster of this node;
//   - BootstrapExpect 0, Join true: do nothing, a leader will add us;
//   - BootstrapExpect N: wait until discovery lists N managers, then,
//     unless a peer already has Raft state, bootstrap with all of them.
//
// Every manager computes the same sorted set from the same discovery
// view, so managers started in any order found one cluster.
func (n *Node) bootstrap() {
	switch {
	case n.cfg.BootstrapExpect == 0 && n.cfg.Join:
		n.log.Info("no raft state, waiting to be added by a leader")
		return
	case n.cfg.BootstrapExpect == 0:
		n.bootstrapWith([]Peer{n.self()})
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()

	t := time.NewTicker(bootstrapRetry)
	defer t.Stop()
	for {
		changed := n.discoveryChanged()
		if done := n.tryBootstrapExpect(ctx); done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// tryBootstrapExpect makes one bootstrap-expect attempt and reports
// whether the question is settled (bootstrapped, or someone else did).
func (n *Node) tryBootstrapExpect(ctx context.Context) bool {
	// A leader may have added us meanwhile.
	if n.raft.LastIndex() > 0 {
		n.log.Info("raft state appeared, not bootstrapping")
		return true
	}

	peers := n.discovered()
	if len(peers) < n.cfg.BootstrapExpect {
		n.log.Debug("waiting for managers", "seen", len(peers),
			"expect", n.cfg.BootstrapExpect)
		return false
	}

	for _, p := range peers {
		if p.Name == n.cfg.Name {
			continue
		}
		has, err := n.peerHasState(ctx, p)
		if err != nil {
			n.log.Warn("cannot tell whether peer has raft state, retrying",
				"peer", p.Name, "error", err)
			return false
		}
		if has {
			n.log.Info("peer already has raft state, waiting to be added",
				"peer", p.Name)
			return true
		}
	}
	n.bootstrapWith(peers)
	return true
}

func (n *Node) peerHasState(ctx context.Context, p Peer) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, peerStateTimeout)
	defer cancel()
	return n.cfg.Discovery.PeerHasState(ctx, p)
}

// discovered returns the discovered managers plus this node, without
// duplicate names, sorted by name.
//
// TODO: with more managers starting than BootstrapExpect, two managers
// may see different sets and found two clusters (Consul shares this);
// a fix is to bootstrap with exactly the first N names.
func (n *Node) discovered() []Peer {
	byName := map[string]Peer{n.cfg.Name: n.self()}
	if n.cfg.Discovery != nil {
		for _, p := range n.cfg.Discovery.Managers() {
			if p.Name != n.cfg.Name {
				byName[p.Name] = p
			}
		}
	}
	out := make([]Peer, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (n *Node) self() Peer {
	return Peer{Name: n.cfg.Name, RaftAddr: string(n.addr)}
}

// bootstrapWith founds a cluster of peers, all voters.
func (n *Node) bootstrapWith(peers []Peer) {
	var c raft.Configuration
	names := make([]string, 0, len(peers))
	for _, p := range peers {
		c.Servers = append(c.Servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(p.Name),
			Address:  raft.ServerAddress(p.RaftAddr),
		})
		names = append(names, p.Name)
	}

	err := n.raft.BootstrapCluster(c).Error()
	switch {
	case errors.Is(err, raft.ErrCantBootstrap):
		n.log.Info("raft state exists, bootstrap skipped")
	case err != nil:
		n.log.Error("bootstrap failed", "error", err)
	default:
		n.log.Info("bootstrapped cluster", "servers", names)
	}
}
