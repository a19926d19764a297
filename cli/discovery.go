package cli

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// memberList is the part of *gossip.Pool discovery reads.
type memberList interface {
	Members() []gossip.Member
	Changed() <-chan struct{}
}

// gossipDiscovery is raftnode.Discovery over the gossip pool: the
// managers are the alive members with role manager, and a peer is asked
// over gRPC whether it has Raft state.
type gossipDiscovery struct {
	pool memberList
	dial func(addr string) (*grpc.ClientConn, error) // rpc.Dial in production
}

// Managers returns the alive managers that published a Raft port.
func (d *gossipDiscovery) Managers() []raftnode.Peer {
	var out []raftnode.Peer
	for _, m := range d.pool.Members() {
		if !m.Alive || m.Meta.Role != pb.RoleManager || m.Meta.RaftPort == 0 {
			continue
		}
		out = append(out, raftnode.Peer{
			Name:     m.Meta.Name,
			RaftAddr: hostPort(m.Meta.Address, m.Meta.RaftPort),
		})
	}
	return out
}

// DeadManagers returns the managers gossip saw die or leave and not
// come back, with when it saw it, for raftnode's dead-server cleanup.
func (d *gossipDiscovery) DeadManagers() []raftnode.DeadPeer {
	var out []raftnode.DeadPeer
	for _, m := range d.pool.Members() {
		if m.Alive || m.Meta.Role != pb.RoleManager {
			continue
		}
		out = append(out, raftnode.DeadPeer{Name: m.Meta.Name, Since: m.Since})
	}
	return out
}

// Changed lets raftnode react to membership changes at once.
func (d *gossipDiscovery) Changed() <-chan struct{} { return d.pool.Changed() }

// PeerHasState asks p for its Raft stats on its gRPC port.
func (d *gossipDiscovery) PeerHasState(ctx context.Context, p raftnode.Peer) (bool, error) {
	st, err := d.raftStats(ctx, p)
	if err != nil {
		return false, err
	}
	return hasRaftState(st), nil
}

// PeerStats asks p for its Raft stats, for the leader's autopilot.
func (d *gossipDiscovery) PeerStats(ctx context.Context, p raftnode.Peer) (raftnode.PeerStats, error) {
	st, err := d.raftStats(ctx, p)
	if err != nil {
		return raftnode.PeerStats{}, err
	}
	return raftnode.PeerStats{Term: st.GetTerm(), LastIndex: st.GetLastIndex(),
		LastContact: time.Duration(max(st.GetLastContact(), 0))}, nil
}

// raftStats calls pb.Peer/RaftStats on the gRPC address p publishes in
// gossip (alive or not: a manager dead in gossip may still answer).
//
// TODO: it dials a new connection each call, and the leader's autopilot
// calls it for every manager every second; the rpc server's connection
// cache, shared with this discovery, would reuse one per manager.
func (d *gossipDiscovery) raftStats(ctx context.Context, p raftnode.Peer) (*pb.ManagerStatus, error) {
	addr := ""
	for _, m := range d.pool.Members() {
		if m.Meta.Name == p.Name && m.Meta.RPCPort != 0 {
			addr = hostPort(m.Meta.Address, m.Meta.RPCPort)
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("manager %q: no gRPC address in gossip", p.Name)
	}
	cc, err := d.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("manager %q: %w", p.Name, err)
	}
	defer cc.Close()

	st, err := pb.NewPeerClient(cc).RaftStats(ctx, &pb.RaftStatsRequest{})
	if err != nil {
		return nil, fmt.Errorf("manager %q: raft stats: %w", p.Name, err)
	}
	return st, nil
}

// hasRaftState reads a peer's stats: a log entry, anything applied, any
// term, or a leader heard from (last_contact >= 0) means it belongs to a
// cluster. A fresh node that was never bootstrapped sits at term 0 with
// an empty log and last_contact -1.
func hasRaftState(st *pb.ManagerStatus) bool {
	return st.GetLastIndex() > 0 || st.GetAppliedIndex() > 0 || st.GetTerm() > 0 ||
		st.GetState() == "leader" || st.GetLastContact() >= 0
}

// ManagerRPCAddr returns the gRPC address the alive manager name
// publishes in gossip. rpc uses it for a leader whose node is not in
// the store yet, as right after an election.
func (d *gossipDiscovery) ManagerRPCAddr(name string) (string, bool) {
	for _, m := range d.pool.Members() {
		if m.Alive && m.Meta.Role == pb.RoleManager &&
			m.Meta.Name == name && m.Meta.Address != "" && m.Meta.RPCPort != 0 {
			return hostPort(m.Meta.Address, m.Meta.RPCPort), true
		}
	}
	return "", false
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

var _ raftnode.Discovery = (*gossipDiscovery)(nil)
var _ raftnode.DiscoveryNotifier = (*gossipDiscovery)(nil)
var _ raftnode.DeadManagerLister = (*gossipDiscovery)(nil)
var _ raftnode.PeerStatser = (*gossipDiscovery)(nil)
