package rpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// DrainNode marks a worker draining: nothing new is placed on it, and
// the rollout engine moves its tasks away in batches.
func (c *controlServer) DrainNode(ctx context.Context,
	req *pb.DrainNodeRequest) (*pb.DrainNodeResponse, error) {

	if err := c.s.setNodeStatus(ctx, req.GetName(), pb.NodeDraining); err != nil {
		return nil, err
	}
	return &pb.DrainNodeResponse{}, nil
}

// ActivateNode makes a drained worker eligible for new tasks again. It
// moves nothing back.
func (c *controlServer) ActivateNode(ctx context.Context,
	req *pb.ActivateNodeRequest) (*pb.ActivateNodeResponse, error) {

	if err := c.s.setNodeStatus(ctx, req.GetName(), pb.NodeReady); err != nil {
		return nil, err
	}
	return &pb.ActivateNodeResponse{}, nil
}

// setNodeStatus proposes an operator's status change of a worker:
// NotFound for an unknown node, InvalidArgument for a manager, and
// FailedPrecondition for a worker that is down, whose status belongs to
// the leader's liveness check. A node already in the status is left
// alone, so that a repeated command keeps status_changed_at.
func (s *Server) setNodeStatus(ctx context.Context, name, want string) error {
	n := s.store.Node(name)
	switch {
	case name == "":
		return status.Error(codes.InvalidArgument, "node: name is required")
	case n == nil:
		return toStatus(fmt.Errorf("node %q: %w", name, ErrNotFound))
	case n.GetRole() != pb.RoleWorker:
		return status.Errorf(codes.InvalidArgument,
			"node %q: is a %s; only workers run tasks", name, n.GetRole())
	case n.GetStatus() == pb.NodeDown:
		return status.Errorf(codes.FailedPrecondition,
			"node %q: is down; its tasks are replaced already", name)
	case n.GetStatus() == want:
		return nil
	}

	cmd := &pb.NodeStatusCmd{
		Name:   name,
		Status: want,
		At:     s.cfg.Now().UnixNano(),
	}
	if _, err := s.cfg.Raft.Propose(ctx, fsm.NodeStatusType, cmd); err != nil {
		return toStatus(fmt.Errorf("node %q: set %s: %w", name, want, err))
	}
	s.log.Info("node status set", "node", name, "status", want)
	return nil
}
