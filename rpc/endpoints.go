package rpc

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Endpoints streams the endpoint set from the local replica: the whole
// set at once, then again each time it changes, until the caller goes
// away or the server shuts down. Any manager serves it, so a worker's
// ingress and DNS follow the cluster while no leader exists. Only a
// worker the replica knows is served (see knownWorker): a worker that
// a new cluster does not know yet keeps serving its last set.
//
// A set goes out when its services differ from the last one sent (the
// index alone does not count), and also when a task was asked to stop
// after the last index sent: the worker then acknowledges an index at or
// past the task's stop_index even if the task was never in the set (an
// unhealthy task), so the leader need not wait out its rotation bound.
func (w *workerServer) Endpoints(req *pb.EndpointsRequest,
	stream grpc.ServerStreamingServer[pb.EndpointsResponse]) error {

	if req.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "node: required")
	}
	if err := w.s.cutOff(); err != nil {
		return err
	}
	ctx := stream.Context()
	cutOff := time.NewTicker(cutOffCheck)
	defer cutOff.Stop()
	var last *pb.EndpointsResponse
	var sent listPos // the position of last
	for {
		// Take the channel before the snapshot so that no change
		// between the two is missed.
		changed := w.s.store.Changed()
		snap := w.s.store.Snapshot()
		if err := knownWorker(snap, req.GetNode()); err != nil {
			return err
		}
		pos := posOf(snap)
		resp := &pb.EndpointsResponse{
			Index:        pos.index,
			Services:     endpointSet(snap),
			RestoreEpoch: pos.epoch,
		}

		// A replica whose state went back (a snapshot restore) waits
		// for the entry the restore commits next: the worker would
		// ignore a set older than the one it serves. A new restore
		// epoch goes out even with the same services, as the
		// worker may have ignored the set before it.
		if !pos.before(sent) &&
			(last == nil || pos.epoch != sent.epoch ||
				!sameServices(resp, last) || lastStopIndex(snap) > sent.index) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last, sent = resp, pos
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

// endpointSet lists every app, sorted by name, with the ports of its
// current version and its endpoint tasks sorted by id: those desired to
// run, running and healthy, on a node in the store that is not down. A
// task on a draining node stays until its replacement has taken over.
// An app with no endpoint task is listed too, so that its ingress ports
// stay published.
func endpointSet(snap *fsm.Snapshot) []*pb.ServiceEndpoints {
	live := make(map[string]bool)
	for _, n := range snap.Nodes() {
		live[n.GetName()] = n.GetStatus() != pb.NodeDown
	}

	apps := snap.Apps()
	out := make([]*pb.ServiceEndpoints, 0, len(apps))
	for _, app := range apps {
		svc := &pb.ServiceEndpoints{
			App:   app.GetName(),
			Ports: fsm.SpecOf(app, app.GetVersion()).GetPorts(),
		}
		for _, t := range snap.TasksByApp(app.GetName()) {
			if t.GetDesired() != pb.DesiredRun || t.GetState() != pb.TaskRunning ||
				!t.GetHealthy() || !live[t.GetNode()] {
				continue
			}
			svc.Endpoints = append(svc.Endpoints, &pb.Endpoint{
				TaskId:  t.GetId(),
				Address: t.GetAddress(),
				Ports:   t.GetPorts(),
			})
		}
		out = append(out, svc)
	}
	return out
}

// sameServices compares two responses' sets, ignoring their indexes.
func sameServices(a, b *pb.EndpointsResponse) bool {
	return proto.Equal(&pb.EndpointsResponse{Services: a.GetServices()},
		&pb.EndpointsResponse{Services: b.GetServices()})
}

// lastStopIndex is the highest stop_index of the tasks desired to stop.
func lastStopIndex(snap *fsm.Snapshot) uint64 {
	var max uint64
	for _, t := range snap.Tasks() {
		if t.GetDesired() == pb.DesiredStop && t.GetStopIndex() > max {
			max = t.GetStopIndex()
		}
	}
	return max
}
