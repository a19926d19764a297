package rpc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// peerStatsTimeout bounds how long ClusterStatus waits for one manager.
const peerStatsTimeout = time.Second

// stateUnreachable is the state of a manager that did not answer.
const stateUnreachable = "unreachable"

// ClusterStatus answers on any manager, leader or not: it is how an
// operator finds out what is wrong when there is no leader.
func (c *controlServer) ClusterStatus(ctx context.Context,
	req *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {

	servers, err := c.s.cfg.Raft.Servers()
	if err != nil {
		return nil, toStatus(fmt.Errorf("cluster status: raft servers: %w", err))
	}
	leader, _ := c.s.cfg.Raft.Leader()
	// By name, as an operator reads them; Raft keeps them in the order
	// they were added.
	slices.SortFunc(servers, func(a, b raftnode.Server) int {
		return strings.Compare(a.Name, b.Name)
	})
	return &pb.ClusterStatusResponse{
		Leader:   leader,
		Managers: c.s.managerStatuses(ctx, servers),
	}, nil
}

// managerStatuses asks every one of servers for its status at once, so
// that one dead manager costs the caller one timeout, not one per
// manager.
func (s *Server) managerStatuses(ctx context.Context, servers []raftnode.Server) []*pb.ManagerStatus {
	out := make([]*pb.ManagerStatus, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.managerStatus(ctx, srv)
		}()
	}
	wg.Wait()
	return out
}

// managerStatus is one manager's own view of Raft, or "unreachable".
func (s *Server) managerStatus(ctx context.Context, srv raftnode.Server) *pb.ManagerStatus {
	var st *pb.ManagerStatus
	if srv.Name == s.cfg.Name {
		st = s.ownStatus()
	} else {
		st = s.peerStats(ctx, srv.Name)
	}
	if st == nil {
		st = &pb.ManagerStatus{State: stateUnreachable}
	}

	// The Raft configuration, not the peer, is the authority on name,
	// address and voting rights.
	st.Name = srv.Name
	st.Address = srv.Address
	st.Voter = srv.Voter
	return st
}

// ownStatus is this manager's own view: Raft's stats and its rollout
// engine's counters.
func (s *Server) ownStatus() *pb.ManagerStatus {
	st := &pb.ManagerStatus{}
	if raftStats := s.cfg.Raft.Stats(); raftStats != nil {
		// Stats may be shared with the Raft node: copy before editing.
		st = proto.Clone(raftStats).(*pb.ManagerStatus)
	}
	if s.cfg.Engine != nil {
		e := s.cfg.Engine()
		st.EngineEnabled = e.Enabled
		st.EngineSteps = e.Steps
		st.EngineProposals = e.Proposals
	}
	return st
}

// peerStats asks another manager for its Raft stats; nil if it cannot.
func (s *Server) peerStats(ctx context.Context, name string) *pb.ManagerStatus {
	log := s.log.With("node", name)
	addr, err := s.managerRPCAddr(name)
	if err != nil {
		log.Debug("manager unreachable", "error", err)
		return nil
	}
	cc, err := s.conns.get(addr)
	if err != nil {
		log.Debug("manager unreachable", "error", err)
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, peerStatsTimeout)
	defer cancel()
	st, err := pb.NewPeerClient(cc).RaftStats(ctx, &pb.RaftStatsRequest{})
	if err != nil {
		log.Debug("manager unreachable", "addr", addr, "error", err)
		return nil
	}
	return st
}

// peerServer implements pb.PeerServer.
type peerServer struct {
	pb.UnimplementedPeerServer
	s *Server
}

// RaftStats returns this manager's own view of Raft and of its rollout
// engine.
func (p *peerServer) RaftStats(ctx context.Context,
	req *pb.RaftStatsRequest) (*pb.ManagerStatus, error) {

	return p.s.ownStatus(), nil
}
