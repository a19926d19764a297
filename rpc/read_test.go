package rpc

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// readRaft adds ConsistentRead to fakeRaft: it fails with err while err
// is set, after running onRead (a leader that learns it was deposed).
type readRaft struct {
	*fakeRaft

	mu     sync.Mutex
	err    error
	onRead func()
	calls  int
}

func (r *readRaft) ConsistentRead(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.onRead != nil {
		r.onRead()
	}
	return r.err
}

func (r *readRaft) setErr(err error, onRead func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err, r.onRead = err, onRead
}

func (r *readRaft) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// withReadRaft makes a test manager's Raft a readRaft and returns it
// through rr once startManager has run.
func withReadRaft(rr **readRaft) func(*Config) {
	return func(c *Config) {
		*rr = &readRaft{fakeRaft: c.Raft.(*fakeRaft)}
		c.Raft = *rr
	}
}

// unconfirmed is what raftnode returns on a leader that a quorum no
// longer follows.
var unconfirmed = fmt.Errorf(`manager "m1": consistent read: `+
	"leadership not confirmed by a quorum: %w", raft.ErrLeadershipLost)

// A leader that cannot confirm its leadership answers Unavailable, naming
// why, to reads and writes alike, and neither reads its store nor
// proposes.
func TestLeaderThatCannotVerifyRefuses(t *testing.T) {
	var rr *readRaft
	m := startManager(t, "m1", true, withReadRaft(&rr))
	if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if rr.callCount() == 0 {
		t.Fatal("deploy ran without a consistent read")
	}
	rr.setErr(unconfirmed, nil)
	indexBefore := m.raft.fsm.State().Index()

	calls := []struct {
		name string
		call func(ctx context.Context) (any, error)
	}{
		{"app status", func(ctx context.Context) (any, error) {
			return m.ctl.AppStatus(ctx, &pb.AppStatusRequest{Name: "web"})
		}},
		{"app list", func(ctx context.Context) (any, error) {
			return m.ctl.ListApps(ctx, &pb.ListAppsRequest{})
		}},
		{"node list", func(ctx context.Context) (any, error) {
			return m.ctl.ListNodes(ctx, &pb.ListNodesRequest{})
		}},
		{"join token", func(ctx context.Context) (any, error) {
			return m.ctl.JoinToken(ctx, &pb.JoinTokenRequest{Role: pb.RoleWorker})
		}},
		{"scale", func(ctx context.Context) (any, error) {
			return m.ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "web", Replicas: 5})
		}},
		{"unchanged deploy", func(ctx context.Context) (any, error) {
			return m.ctl.DeployApp(ctx, &pb.DeployAppRequest{Spec: webSpec()})
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.call(ctxT(t))
			wantCode(t, err, codes.Unavailable, "no leader",
				`manager "m1"`, "leadership not confirmed by a quorum")
			if err == nil {
				t.Errorf("answered %v", resp)
			}
			t.Logf("refused: %v", err)
		})
	}
	if got := m.raft.fsm.State().Index(); got != indexBefore {
		t.Errorf("store index %d after refused calls, want %d: something was proposed",
			got, indexBefore)
	}
	app := m.raft.fsm.State().App("web")
	if got := fsm.SpecOf(app, app.GetVersion()).GetReplicas(); got != 2 {
		t.Errorf("web has %d replicas after a refused scale, want 2", got)
	}

	// ClusterStatus answers on any manager, confirmed or not: it is how
	// an operator finds out what is wrong.
	if _, err := m.ctl.ClusterStatus(ctxT(t), &pb.ClusterStatusRequest{}); err != nil {
		t.Errorf("cluster status on an unconfirmed leader: %v", err)
	}
}

// A leader that learns during the read that another has replaced it
// forwards the call to the new leader rather than failing it.
func TestDeposedLeaderForwards(t *testing.T) {
	var rr *readRaft
	old := startManager(t, "m1", true, withReadRaft(&rr))
	leader := startManager(t, "m2", true)
	old.addManager(t, leader)
	if _, err := leader.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy on m2: %v", err)
	}
	rr.setErr(fmt.Errorf("consistent read: %w", raft.ErrNotLeader), func() {
		rr.fakeRaft.set(func(r *fakeRaft) { r.leader, r.leaderName = false, "m2" })
	})

	resp, err := old.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "web"})
	if err != nil {
		t.Fatalf("app status on the deposed leader: %v", err)
	}
	if resp.GetApp().GetName() != "web" {
		t.Errorf("got app %v, want m2's app web", resp.GetApp())
	}
	if old.raft.fsm.State().App("web") != nil {
		t.Error("the deposed leader's own store has web: the test reads the wrong replica")
	}
}
