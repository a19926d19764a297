package rpc

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// workerServer implements pb.WorkerServer. Register and Report run on
// the leader (forwarded by forwardUnary); Assignments and Endpoints run
// anywhere.
type workerServer struct {
	pb.UnimplementedWorkerServer
	s *Server
}

// Register admits a worker that presents the worker join token and
// records it as a ready node (a draining node stays draining). It
// answers with the managers a worker may talk to.
func (w *workerServer) Register(ctx context.Context,
	req *pb.RegisterRequest) (*pb.RegisterResponse, error) {

	want := w.s.store.Meta().GetWorkerToken()
	if want == "" {
		return nil, status.Error(codes.Unavailable,
			"worker join token: cluster meta is not initialised yet")
	}
	if subtle.ConstantTimeCompare([]byte(req.GetToken()), []byte(want)) != 1 {
		return nil, status.Error(codes.PermissionDenied, "invalid join token")
	}
	if req.GetName() == "" || req.GetAddress() == "" {
		return nil, status.Errorf(codes.InvalidArgument,
			"node %q: name and address are required", req.GetName())
	}

	node, err := w.registeredNode(req)
	if err != nil {
		return nil, err
	}
	cmd := &pb.UpsertNodeCmd{Node: node}
	if _, err := w.s.cfg.Raft.Propose(ctx, fsm.UpsertNodeType, cmd); err != nil {
		return nil, toStatus(fmt.Errorf("node %q: register: %w", req.GetName(), err))
	}
	w.s.log.Debug("worker registered", "node", node.GetName(), "address", node.GetAddress())
	return &pb.RegisterResponse{Managers: w.s.managers()}, nil
}

// registeredNode is the node a registration stores.
func (w *workerServer) registeredNode(req *pb.RegisterRequest) (*pb.Node, error) {
	now := w.s.cfg.Now().UnixNano()
	node := &pb.Node{
		Name:            req.GetName(),
		Role:            pb.RoleWorker,
		Address:         req.GetAddress(),
		GossipPort:      req.GetGossipPort(),
		DnsPort:         req.GetDnsPort(),
		Status:          pb.NodeReady,
		RegisteredAt:    now,
		StatusChangedAt: now,
	}

	old := w.s.store.Node(req.GetName())
	switch {
	case old == nil:
	case old.GetRole() != pb.RoleWorker:
		// For good, unlike a live worker's name below: refused as a
		// wrong token is, so that the worker exits and says why.
		return nil, status.Errorf(codes.PermissionDenied,
			"node %q: name is taken by a %s", req.GetName(), old.GetRole())
	case old.GetAddress() != req.GetAddress() && old.GetStatus() != pb.NodeDown:
		// Two live workers under one name would both run its tasks. A
		// down node's name may be taken over: that is how a replaced
		// machine comes back.
		return nil, status.Errorf(codes.AlreadyExists,
			"node name %q is in use by %s", req.GetName(), old.GetAddress())
	case old.GetStatus() == pb.NodeDraining:
		// An operator drained it; registering again must not undo that.
		node.Status = pb.NodeDraining
		node.StatusChangedAt = old.GetStatusChangedAt()
	case old.GetStatus() == pb.NodeReady:
		node.StatusChangedAt = old.GetStatusChangedAt()
	}
	return node, nil
}

// managers lists the managers' addresses from the store.
func (s *Server) managers() []*pb.ManagerAddress {
	var out []*pb.ManagerAddress
	for _, n := range s.store.Nodes() {
		if n.GetRole() != pb.RoleManager {
			continue
		}
		out = append(out, &pb.ManagerAddress{
			Name:       n.GetName(),
			Address:    n.GetAddress(),
			RpcPort:    n.GetRpcPort(),
			GossipPort: n.GetGossipPort(),
		})
	}
	return out
}

// Assignments streams the node's tasks from the local replica: the whole
// list at once, then again each time it changes, until the caller goes
// away or the server shuts down. It serves only a worker the replica
// knows (see knownWorker).
func (w *workerServer) Assignments(req *pb.AssignmentsRequest,
	stream grpc.ServerStreamingServer[pb.AssignmentsResponse]) error {

	if req.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "node: required")
	}
	if err := w.s.cutOff(); err != nil {
		return err
	}
	ctx := stream.Context()
	cutOff := time.NewTicker(cutOffCheck)
	defer cutOff.Stop()
	var last []*pb.Task
	var sent listPos // the position of the last list sent
	for first := true; ; first = false {
		// Take the channel before the snapshot so that no change
		// between the two is missed.
		changed := w.s.store.Changed()
		snap := w.s.store.Snapshot()
		if err := knownWorker(snap, req.GetNode()); err != nil {
			return err
		}
		tasks := snap.TasksByNode(req.GetNode())

		// A replica whose state went back (a snapshot restore installs
		// the file's state before the entry that counts the restore)
		// waits for that entry: the worker ignores a list older than
		// one it applied, and last must stay the list it did apply so
		// that the next change is sent. A new restore epoch is
		// sent even with the same tasks, as a worker may have ignored
		// the list before it.
		pos := posOf(snap)
		if !pos.before(sent) &&
			(first || pos.epoch != sent.epoch || !sameTasks(tasks, last)) {
			resp := &pb.AssignmentsResponse{Tasks: tasks, Index: pos.index,
				RestoreEpoch: pos.epoch}
			if err := stream.Send(resp); err != nil {
				return err
			}
			last, sent = tasks, pos
		}

		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-w.s.done:
			return status.Error(codes.Unavailable, "manager is shutting down")
		case <-cutOff.C:
			if err := w.s.cutOff(); err != nil {
				return err
			}
		}
	}
}

// knownWorker is a NotFound status unless snap holds node as a worker.
//
// A manager's lists are the whole truth for a worker: what is not listed
// is stopped. That authority holds only over the workers of this state.
// A worker that kept running while every manager was lost meets a new
// cluster on the same addresses whose state does not know it yet; its
// empty list, at any index, would stop every container before the
// backup is restored. So a worker the state does not know gets no list
// and keeps what it runs, retrying until the state knows it: after a
// restore, or, for a new worker, once its registration is applied on
// this replica (a follower may lag behind the leader that took it).
//
// TODO: a worker that a restored state lacks (it joined after the save)
// keeps its containers, unknown to the cluster, until it is restarted
// and registers again; a cluster ID in RegisterResponse and in the lists
// would let it tell its own cluster from a new one and register again at
// once.
func knownWorker(snap *fsm.Snapshot, node string) error {
	n := snap.Node(node)
	switch {
	case n == nil:
		return status.Errorf(codes.NotFound,
			"node %q: not a node of this cluster's state", node)
	case n.GetRole() != pb.RoleWorker:
		return status.Errorf(codes.NotFound,
			"node %q: not a worker but a %s", node, n.GetRole())
	}
	return nil
}

// listPos is where a list a stream sends stands in the cluster's
// history: the restore epoch orders before the Raft index, as a
// snapshot restore starts a new history (the worker orders lists the same
// way).
type listPos struct {
	epoch uint64
	index uint64
}

func posOf(snap *fsm.Snapshot) listPos {
	return listPos{epoch: snap.Meta().GetRestoreEpoch(), index: snap.Index()}
}

// before reports whether p is older than q.
func (p listPos) before(q listPos) bool {
	if p.epoch != q.epoch {
		return p.epoch < q.epoch
	}
	return p.index < q.index
}

func sameTasks(a, b []*pb.Task) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// Report records the task states a worker observed, stamped with the
// leader's clock, and the index of the endpoint set it serves: that
// acknowledgement alone is worth an entry, as a draining task waits on it.
func (w *workerServer) Report(ctx context.Context,
	req *pb.ReportRequest) (*pb.ReportResponse, error) {

	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node: required")
	}
	if len(req.GetReports()) == 0 && req.GetEndpointsIndex() == 0 {
		return &pb.ReportResponse{}, nil
	}
	cmd := &pb.TaskReportsCmd{
		Node:           req.GetNode(),
		Reports:        req.GetReports(),
		At:             w.s.cfg.Now().UnixNano(),
		EndpointsIndex: req.GetEndpointsIndex(),
	}
	if _, err := w.s.cfg.Raft.Propose(ctx, fsm.TaskReportsType, cmd); err != nil {
		return nil, toStatus(fmt.Errorf("node %q: report: %w", req.GetNode(), err))
	}
	return &pb.ReportResponse{}, nil
}

// A stream served from a replica that has lost touch with the leader
// would feed its worker a frozen state for as long as the connection
// lasts, say while the manager sits alone on the wrong side of a
// partition. So a follower ends its streams once it has heard nothing
// from a leader for cutOffAfter; the worker moves to another manager and
// keeps what it runs meanwhile.
const (
	cutOffAfter = 2 * time.Second
	cutOffCheck = 500 * time.Millisecond
)

// cutOff returns an Unavailable error when this manager is a follower
// that has not heard from a leader for cutOffAfter, or never has.
func (s *Server) cutOff() error {
	if s.cfg.Raft.IsLeader() {
		return nil
	}
	last := time.Duration(s.cfg.Raft.Stats().GetLastContact())
	if last >= 0 && last < cutOffAfter {
		return nil
	}
	return status.Errorf(codes.Unavailable,
		"manager %s has not heard from a leader for %s", s.cfg.Name, cutOffAfter)
}
