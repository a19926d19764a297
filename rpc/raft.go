package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// transferWait bounds how long TransferLeadership waits to learn the new
// leader's name once the old leader has stepped down.
const transferWait = 5 * time.Second

// transferPoll is how often TransferLeadership looks for the new leader.
const transferPoll = 20 * time.Millisecond

// Membership is the part of the Raft node that changes the voter set.
// *raftnode.Node implements it; a Config.Raft without it answers
// Unimplemented to RemovePeer and TransferLeadership.
type Membership interface {
	// RemoveServer removes name from the Raft configuration; it must
	// run on the leader.
	RemoveServer(name string) error
	// TransferLeadership hands leadership to the voter name; it must
	// run on the leader.
	TransferLeadership(name string) error
}

var _ Membership = (*raftnode.Node)(nil)

// membership returns Config.Raft as a Membership, or Unimplemented.
func (s *Server) membership() (Membership, error) {
	m, ok := s.cfg.Raft.(Membership)
	if !ok {
		return nil, status.Error(codes.Unimplemented,
			"raft membership changes are not supported by this manager")
	}
	return m, nil
}

// findServer returns the member of the Raft configuration called name.
func (s *Server) findServer(name string) (raftnode.Server, []raftnode.Server, error) {
	servers, err := s.cfg.Raft.Servers()
	if err != nil {
		return raftnode.Server{}, nil, toStatus(fmt.Errorf("raft servers: %w", err))
	}
	for _, srv := range servers {
		if srv.Name == name {
			return srv, servers, nil
		}
	}
	return raftnode.Server{}, servers, status.Errorf(codes.NotFound,
		"raft peer %q: not in the raft configuration", name)
}

// RemovePeer removes a manager from the Raft configuration, typically
// one that is gone for good. It runs on the leader (forwarded there) and
// refuses to remove the leader itself: with a quorum of the rest the
// leader would be removing the node that commits the change. It also
// refuses a removal that would leave too few answering voters for a
// quorum (quorumWithout).
//
// TODO: the manager's node record stays in the store (status down once
// gossip declares it dead); a RemoveNode command would clear it.
func (c *controlServer) RemovePeer(ctx context.Context,
	req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {

	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "raft peer: name is required")
	}
	m, err := c.s.membership()
	if err != nil {
		return nil, err
	}
	peer, servers, err := c.s.findServer(name)
	if err != nil {
		return nil, err
	}
	if leader, _ := c.s.cfg.Raft.Leader(); name == leader || name == c.s.cfg.Name {
		return nil, status.Errorf(codes.FailedPrecondition,
			"raft peer %q is the leader: transfer leadership first", name)
	}
	if peer.Voter {
		if err := c.s.quorumWithout(ctx, name, servers); err != nil {
			return nil, err
		}
	}

	if err := m.RemoveServer(name); err != nil {
		return nil, toStatus(fmt.Errorf("raft peer %q: %w", name, err))
	}
	c.s.log.Info("removed raft peer", "node", name)
	return &pb.RemovePeerResponse{}, nil
}

// quorumWithout refuses the removal of the voter name when the voters
// left that answer would not be a majority of them: Raft commits the new
// configuration with the votes of the voters left, so with one of them
// dead the change would wait on it, the leader step down, and no manager
// be elected until the dead one came back.
func (s *Server) quorumWithout(ctx context.Context, name string, servers []raftnode.Server) error {
	var left []raftnode.Server
	for _, srv := range servers {
		if srv.Voter && srv.Name != name {
			left = append(left, srv)
		}
	}
	var silent []string
	for i, st := range s.managerStatuses(ctx, left) {
		if st.GetState() == stateUnreachable {
			silent = append(silent, left[i].Name)
		}
	}
	answering, need := len(left)-len(silent), len(left)/2+1
	if answering < need {
		return status.Errorf(codes.FailedPrecondition,
			"raft peer %q: removing it would leave %d voters of which %d answer, "+
				"fewer than the %d of a quorum: bring back or remove %s first",
			name, len(left), answering, need, strings.Join(silent, ", "))
	}
	return nil
}

// TransferLeadership hands leadership to the voter req.Name, or when it
// is empty to the reachable voter with the highest applied index. It
// answers the new leader's name once this manager knows it, after at
// most transferWait; an empty name means the transfer happened but the
// new leader was not heard from in time.
func (c *controlServer) TransferLeadership(ctx context.Context,
	req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {

	m, err := c.s.membership()
	if err != nil {
		return nil, err
	}
	target := req.GetName()
	if target == "" {
		target, err = c.s.transferTarget(ctx)
	} else {
		err = c.s.checkTransferTarget(target)
	}
	if err != nil {
		return nil, err
	}

	if err := m.TransferLeadership(target); err != nil {
		// The membership's error names the target already.
		return nil, toStatus(err)
	}
	c.s.log.Info("transferred leadership", "node", target)
	return &pb.TransferLeadershipResponse{Leader: c.s.awaitNewLeader(ctx)}, nil
}

// checkTransferTarget refuses a name that is unknown, not a voter, or
// this manager.
func (s *Server) checkTransferTarget(name string) error {
	srv, _, err := s.findServer(name)
	switch {
	case err != nil:
		return err
	case name == s.cfg.Name:
		return status.Errorf(codes.FailedPrecondition,
			"raft peer %q is already the leader", name)
	case !srv.Voter:
		return status.Errorf(codes.FailedPrecondition,
			"raft peer %q is not a voter", name)
	}
	return nil
}

// errNoTransferTarget means no other voter answered.
var errNoTransferTarget = errors.New("no other reachable voter to transfer leadership to")

// transferTarget picks the reachable voter other than this manager with
// the highest applied index: the one that can take over soonest.
func (s *Server) transferTarget(ctx context.Context) (string, error) {
	servers, err := s.cfg.Raft.Servers()
	if err != nil {
		return "", toStatus(fmt.Errorf("raft servers: %w", err))
	}
	best, bestIndex := "", uint64(0)
	for _, srv := range servers {
		if !srv.Voter || srv.Name == s.cfg.Name {
			continue
		}
		st := s.managerStatus(ctx, srv)
		if st.GetState() == stateUnreachable {
			continue
		}
		if best == "" || st.GetAppliedIndex() > bestIndex {
			best, bestIndex = srv.Name, st.GetAppliedIndex()
		}
	}
	if best == "" {
		return "", status.Error(codes.FailedPrecondition, errNoTransferTarget.Error())
	}
	return best, nil
}

// awaitNewLeader polls until a leader other than this manager is known,
// for at most transferWait; "" if none is.
func (s *Server) awaitNewLeader(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, transferWait)
	defer cancel()
	tick := time.NewTicker(transferPoll)
	defer tick.Stop()
	for {
		if name, _ := s.cfg.Raft.Leader(); name != "" && name != s.cfg.Name {
			return name
		}
		select {
		case <-ctx.Done():
			s.log.Warn("new leader not known yet after a transfer", "waited", transferWait)
			return ""
		case <-s.done:
			return ""
		case <-tick.C:
		}
	}
}
