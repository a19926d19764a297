package rpc

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
	"github.com/hivemind-orch/hivemind/spec"
)

// deployAttempts bounds the retries of a deploy or rollback that lost a
// race with another write to the same app.
const deployAttempts = 3

// controlServer implements pb.ControlServer. On a follower every method
// but ClusterStatus is forwarded before it gets here (see forwardUnary).
type controlServer struct {
	pb.UnimplementedControlServer
	s *Server
}

// JoinToken returns the worker or manager join token.
func (c *controlServer) JoinToken(ctx context.Context,
	req *pb.JoinTokenRequest) (*pb.JoinTokenResponse, error) {

	meta := c.s.store.Meta()
	var token string
	switch req.GetRole() {
	case pb.RoleWorker:
		token = meta.GetWorkerToken()
	case pb.RoleManager:
		token = meta.GetManagerToken()
	default:
		return nil, status.Errorf(codes.InvalidArgument,
			"role %q: must be %q or %q", req.GetRole(), pb.RoleWorker, pb.RoleManager)
	}
	if token == "" {
		return nil, status.Errorf(codes.Unavailable,
			"%s join token: cluster meta is not initialised yet", req.GetRole())
	}
	return &pb.JoinTokenResponse{Token: token}, nil
}

// ListNodes returns every node, sorted by name.
func (c *controlServer) ListNodes(ctx context.Context,
	req *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {

	return &pb.ListNodesResponse{Nodes: c.s.store.Nodes()}, nil
}

// DeployApp validates a spec and stores it as the app's next version,
// with a deployment when tasks must change. An identical spec changes
// nothing and answers changed=false.
func (c *controlServer) DeployApp(ctx context.Context,
	req *pb.DeployAppRequest) (*pb.DeployAppResponse, error) {

	if req.GetSpec() == nil {
		return nil, status.Error(codes.InvalidArgument, "spec: required")
	}
	sp := proto.Clone(req.GetSpec()).(*pb.AppSpec)
	spec.ApplyDefaults(sp)
	if err := spec.Validate(sp); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "app %q: %v", sp.GetName(), err)
	}

	for attempt := 1; ; attempt++ {
		app := c.s.store.App(sp.GetName())
		cmd, changed := deploy.NewVersion(app, sp, c.s.cfg.Now(), c.s.cfg.NewID)
		if cmd == nil || !changed {
			return &pb.DeployAppResponse{App: sp.GetName(), Version: app.GetVersion()}, nil
		}

		_, err := c.s.cfg.Raft.Propose(ctx, fsm.DeployAppType, cmd)
		if errors.Is(err, fsm.ErrVersionConflict) && attempt < deployAttempts {
			c.s.log.Warn("deploy raced another write, retrying",
				"app", sp.GetName(), "attempt", attempt)
			continue
		}
		if err != nil {
			return nil, toStatus(fmt.Errorf("app %q: deploy: %w", sp.GetName(), err))
		}
		return &pb.DeployAppResponse{
			App:          sp.GetName(),
			Version:      cmd.GetApp().GetVersion(),
			DeploymentId: cmd.GetDeployment().GetId(),
			Changed:      true,
		}, nil
	}
}

// ListApps summarises every app.
func (c *controlServer) ListApps(ctx context.Context,
	req *pb.ListAppsRequest) (*pb.ListAppsResponse, error) {

	snap := c.s.store.Snapshot()
	apps := snap.Apps()
	resp := &pb.ListAppsResponse{Apps: make([]*pb.AppSummary, 0, len(apps))}
	for _, app := range apps {
		resp.Apps = append(resp.Apps, summarise(snap, app))
	}
	return resp, nil
}

// summarise counts as running the tasks desired to run that run on a node
// that is not down, and as healthy those of them of the current version
// that are healthy, so that HEALTHY never counts a rollout's old tasks.
func summarise(snap *fsm.Snapshot, app *pb.App) *pb.AppSummary {
	cur := fsm.SpecOf(app, app.GetVersion())
	sum := &pb.AppSummary{
		Name:     app.GetName(),
		Version:  app.GetVersion(),
		Replicas: cur.GetReplicas(),
		Image:    cur.GetImage(),
	}
	down := downNodes(snap)
	for _, t := range snap.TasksByApp(app.GetName()) {
		if t.GetState() != pb.TaskRunning || t.GetDesired() != pb.DesiredRun ||
			down[t.GetNode()] {
			continue
		}
		sum.Running++
		if t.GetHealthy() && deploy.OfCurrentVersion(app, t) {
			sum.Healthy++
		}
	}
	if d := snap.LatestDeployment(app.GetName()); d != nil {
		sum.DeploymentStatus = d.GetStatus()
	}
	return sum
}

// AppStatus returns an app, its tasks that are not stopped, and its
// latest deployment. A task that has not finished on a node that is down
// is shown in state "lost" and unhealthy: its last report is stale.
func (c *controlServer) AppStatus(ctx context.Context,
	req *pb.AppStatusRequest) (*pb.AppStatusResponse, error) {

	snap := c.s.store.Snapshot()
	app := snap.App(req.GetName())
	if app == nil {
		return nil, appNotFound(req.GetName())
	}
	resp := &pb.AppStatusResponse{
		App:        app,
		Deployment: snap.LatestDeployment(app.GetName()),
	}
	down := downNodes(snap)
	for _, t := range snap.TasksByApp(app.GetName()) {
		switch {
		case t.GetState() == pb.TaskStopped:
			continue
		case down[t.GetNode()] && t.GetState() != pb.TaskFailed:
			t = proto.Clone(t).(*pb.Task) // stored objects are shared
			t.State = pb.TaskLost
			t.Healthy = false
		}
		resp.Tasks = append(resp.Tasks, t)
	}
	return resp, nil
}

// downNodes returns the names of the nodes whose status is down.
func downNodes(snap *fsm.Snapshot) map[string]bool {
	down := make(map[string]bool)
	for _, n := range snap.Nodes() {
		if n.GetStatus() == pb.NodeDown {
			down[n.GetName()] = true
		}
	}
	return down
}

// ScaleApp sets the replicas of the app's current version.
func (c *controlServer) ScaleApp(ctx context.Context,
	req *pb.ScaleAppRequest) (*pb.ScaleAppResponse, error) {

	if req.GetReplicas() < 0 {
		return nil, status.Errorf(codes.InvalidArgument,
			"app %q: replicas %d: must not be negative", req.GetName(), req.GetReplicas())
	}
	if req.GetReplicas() > spec.MaxReplicas {
		return nil, status.Errorf(codes.InvalidArgument,
			"app %q: replicas %d: above the maximum of %d",
			req.GetName(), req.GetReplicas(), spec.MaxReplicas)
	}
	if c.s.store.App(req.GetName()) == nil {
		return nil, appNotFound(req.GetName())
	}
	cmd := &pb.ScaleAppCmd{
		Name:     req.GetName(),
		Replicas: req.GetReplicas(),
		At:       c.s.cfg.Now().UnixNano(),
	}
	if _, err := c.s.cfg.Raft.Propose(ctx, fsm.ScaleAppType, cmd); err != nil {
		return nil, toStatus(fmt.Errorf("app %q: scale: %w", req.GetName(), err))
	}
	return &pb.ScaleAppResponse{}, nil
}

// RemoveApp deletes an app; its tasks are stopped by the workers.
func (c *controlServer) RemoveApp(ctx context.Context,
	req *pb.RemoveAppRequest) (*pb.RemoveAppResponse, error) {

	if c.s.store.App(req.GetName()) == nil {
		return nil, appNotFound(req.GetName())
	}
	cmd := &pb.RemoveAppCmd{Name: req.GetName(), At: c.s.cfg.Now().UnixNano()}
	if _, err := c.s.cfg.Raft.Propose(ctx, fsm.RemoveAppType, cmd); err != nil {
		return nil, toStatus(fmt.Errorf("app %q: remove: %w", req.GetName(), err))
	}
	return &pb.RemoveAppResponse{}, nil
}

// RollbackApp deploys the app's last stable version again.
func (c *controlServer) RollbackApp(ctx context.Context,
	req *pb.RollbackAppRequest) (*pb.RollbackAppResponse, error) {

	for attempt := 1; ; attempt++ {
		app := c.s.store.App(req.GetName())
		if app == nil {
			return nil, appNotFound(req.GetName())
		}
		cmd, err := deploy.Rollback(app, c.s.cfg.Now(), c.s.cfg.NewID)
		if err != nil {
			// deploy's error names the app and the reason already.
			return nil, toStatus(err)
		}

		_, err = c.s.cfg.Raft.Propose(ctx, fsm.DeployAppType, cmd)
		if errors.Is(err, fsm.ErrVersionConflict) && attempt < deployAttempts {
			c.s.log.Warn("rollback raced another write, retrying",
				"app", req.GetName(), "attempt", attempt)
			continue
		}
		if err != nil {
			return nil, toStatus(fmt.Errorf("app %q: rollback: %w", req.GetName(), err))
		}
		return &pb.RollbackAppResponse{
			Version:      cmd.GetApp().GetVersion(),
			DeploymentId: cmd.GetDeployment().GetId(),
		}, nil
	}
}

func appNotFound(name string) error {
	return toStatus(fmt.Errorf("app %q: %w", name, ErrNotFound))
}
