package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
	"github.com/hivemind-orch/hivemind/spec"
)

const (
	workerToken  = "worker-secret"
	managerToken = "manager-secret"
	testTimeout  = 5 * time.Second
)

// fakeRaft applies proposals straight into a real FSM when it leads, and
// refuses them like raft does when it does not.
type fakeRaft struct {
	fsm *fsm.FSM

	mu         sync.Mutex
	index      uint64
	leader     bool
	leaderName string
	servers    []raftnode.Server
	stats      *pb.ManagerStatus
	panicStats bool

	// beforePropose, when set, runs once before the next proposal is
	// applied: a write that races the proposal.
	beforePropose func()
}

// set changes the fake under its lock, as servers read it concurrently.
func (r *fakeRaft) set(f func(r *fakeRaft)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *fakeRaft) IsLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader
}

func (r *fakeRaft) Leader() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leaderName, ""
}

func (r *fakeRaft) Stats() *pb.ManagerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.panicStats {
		panic("stats exploded")
	}
	return r.stats
}

func (r *fakeRaft) Servers() ([]raftnode.Server, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.servers), nil
}

func (r *fakeRaft) Propose(ctx context.Context, t fsm.CommandType,
	msg proto.Message) (uint64, error) {
	if !r.IsLeader() {
		return 0, raft.ErrNotLeader
	}
	r.mu.Lock()
	race := r.beforePropose
	r.beforePropose = nil
	r.mu.Unlock()
	if race != nil {
		race()
	}
	return r.apply(t, msg)
}

// apply commits a command whether or not this fake leads: tests use it
// to set a follower's replica up.
func (r *fakeRaft) apply(t fsm.CommandType, msg proto.Message) (uint64, error) {
	data, err := fsm.Encode(t, msg)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	res := r.fsm.Apply(&raft.Log{Index: r.index, Term: 1, Type: raft.LogCommand, Data: data})
	if err, ok := res.(error); ok {
		return 0, err
	}
	return r.index, nil
}

func (r *fakeRaft) mustApply(t *testing.T, ct fsm.CommandType, msg proto.Message) {
	t.Helper()
	if _, err := r.apply(ct, msg); err != nil {
		t.Fatalf("apply %v: %v", ct, err)
	}
}

// testManager is one Server with its fake Raft and a client.
type testManager struct {
	name   string
	raft   *fakeRaft
	srv    *Server
	conn   *grpc.ClientConn
	ctl    pb.ControlClient
	worker pb.WorkerClient
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Debug,
		Output: testWriter{t},
	})
}

// startManager starts a Server on loopback ports with a fresh FSM that
// holds the cluster meta and this manager's own node; opts adjust its
// Config.
func startManager(t *testing.T, name string, leader bool,
	opts ...func(*Config)) *testManager {
	t.Helper()
	log := testLogger(t, name)
	f := fsm.New(log)
	r := &fakeRaft{
		fsm:    f,
		leader: leader,
		stats:  &pb.ManagerStatus{Name: name, State: "follower", Term: 1},
	}
	if leader {
		r.leaderName = name
		r.stats.State = "leader"
	}
	ids := 0
	cfg := Config{
		Name:     name,
		Logger:   log,
		FSM:      f,
		Raft:     r,
		Now:      func() time.Time { return time.Unix(1000, 0) },
		NewID:    func() string { ids++; return fmt.Sprintf("%s-id-%d", name, ids) },
		RPCAddr:  "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})

	conn, err := Dial(srv.RPCAddr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	m := &testManager{
		name:   name,
		raft:   r,
		srv:    srv,
		conn:   conn,
		ctl:    pb.NewControlClient(conn),
		worker: pb.NewWorkerClient(conn),
	}
	r.mustApply(t, fsm.SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{
		ClusterId:    "c1",
		WorkerToken:  workerToken,
		ManagerToken: managerToken,
	}})
	m.addManager(t, m)
	return m
}

// addManager records other as a manager node in m's replica.
func (m *testManager) addManager(t *testing.T, other *testManager) {
	t.Helper()
	host, port, err := net.SplitHostPort(other.srv.RPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name:    other.name,
		Role:    pb.RoleManager,
		Address: host,
		RpcPort: int32(p),
		Status:  pb.NodeReady,
	}})
}

// addWorker records a ready worker in m's replica, as its registration
// would.
func (m *testManager) addWorker(t *testing.T, name string) {
	t.Helper()
	m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name:    name,
		Role:    pb.RoleWorker,
		Address: "10.0.0.1",
		Status:  pb.NodeReady,
	}})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func webSpec() *pb.AppSpec {
	return &pb.AppSpec{Name: "web", Image: "registry.local/web:v1", Replicas: 2}
}

// wantCode fails unless err is a status with the code and a message
// that contains every fragment.
func wantCode(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v (%v), want code %v", st.Code(), err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Errorf("message %q does not contain %q", st.Message(), f)
		}
	}
}

// waitFor polls cond until it returns nil or the deadline passes; the
// last error names what was not yet true.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeployApp(t *testing.T) {
	m := startManager(t, "m1", true)

	bad := []struct {
		name  string
		spec  *pb.AppSpec
		field string
	}{
		{"no spec", nil, "spec"},
		{"no image", &pb.AppSpec{Name: "web"}, "image"},
		{"bad name", &pb.AppSpec{Name: "Web!", Image: "x"}, "name"},
		{"negative replicas", &pb.AppSpec{Name: "web", Image: "x", Replicas: -1}, "replicas"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: tc.spec})
			wantCode(t, err, codes.InvalidArgument, tc.field)
			if apps := m.raft.fsm.State().Apps(); len(apps) != 0 {
				t.Errorf("stored %d apps after a bad spec", len(apps))
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		resp, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()})
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		if !resp.Changed || resp.Version != 1 || resp.App != "web" {
			t.Errorf("response %v, want web version 1 changed", resp)
		}
		app := m.raft.fsm.State().App("web")
		if app == nil || app.Version != 1 {
			t.Fatalf("stored app %v, want web at version 1", app)
		}
		// Defaults are filled in before the spec is stored.
		if fsm.SpecOf(app, 1).GetUpdate().GetBatchSize() == 0 {
			t.Errorf("stored spec has no update defaults: %v", fsm.SpecOf(app, 1))
		}
	})

	t.Run("same spec changes nothing", func(t *testing.T) {
		resp, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()})
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		if resp.Changed || resp.Version != 1 {
			t.Errorf("response %v, want version 1 unchanged", resp)
		}
	})

	t.Run("new image makes a deployment", func(t *testing.T) {
		sp := webSpec()
		sp.Image = "registry.local/web:v2"
		resp, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: sp})
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		if resp.Version != 2 || resp.DeploymentId == "" {
			t.Errorf("response %v, want version 2 with a deployment", resp)
		}
	})
}

func TestDeployAppRetriesAfterConflict(t *testing.T) {
	m := startManager(t, "m1", true)
	if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}

	// Another writer stores version 2 between our read and our proposal.
	m.raft.set(func(r *fakeRaft) {
		r.beforePropose = func() {
			other := webSpec()
			other.Image = "registry.local/web:other"
			spec.ApplyDefaults(other)
			cmd, _ := deploy.NewVersion(m.raft.fsm.State().App("web"), other,
				time.Unix(1000, 0), func() string { return "racer" })
			m.raft.mustApply(t, fsm.DeployAppType, cmd)
		}
	})
	sp := webSpec()
	sp.Image = "registry.local/web:v2"
	resp, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: sp})
	if err != nil {
		t.Fatalf("deploy after a conflict: %v", err)
	}
	app := m.raft.fsm.State().App("web")
	if resp.Version != 3 || app.GetVersion() != 3 ||
		fsm.SpecOf(app, 3).GetImage() != sp.Image {
		t.Errorf("response %v, app %v; want version 3 with image %s", resp, app, sp.Image)
	}
}

func TestAppReads(t *testing.T) {
	m := startManager(t, "m1", true)
	if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	task := func(id, desired, state string, healthy bool) *pb.Task {
		return &pb.Task{Id: id, App: "web", Version: 1, Node: "w1",
			Desired: desired, State: state, Healthy: healthy}
	}
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{
		task("t1", pb.DesiredRun, pb.TaskRunning, true),
		task("t2", pb.DesiredRun, pb.TaskRunning, false),
		task("t3", pb.DesiredStop, pb.TaskStopped, false),
	}})

	t.Run("status", func(t *testing.T) {
		resp, err := m.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "web"})
		if err != nil {
			t.Fatalf("app status: %v", err)
		}
		var ids []string
		for _, task := range resp.Tasks {
			ids = append(ids, task.Id)
		}
		if resp.App.GetName() != "web" || strings.Join(ids, ",") != "t1,t2" {
			t.Errorf("got app %q tasks %v, want web with t1,t2", resp.App.GetName(), ids)
		}
	})

	t.Run("status of unknown app", func(t *testing.T) {
		_, err := m.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "nope"})
		wantCode(t, err, codes.NotFound, `app "nope"`)
	})

	t.Run("list", func(t *testing.T) {
		resp, err := m.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
		if err != nil {
			t.Fatalf("list apps: %v", err)
		}
		want := &pb.AppSummary{Name: "web", Version: 1, Replicas: 2, Running: 2,
			Healthy: 1, Image: "registry.local/web:v1"}
		if len(resp.Apps) != 1 || !proto.Equal(resp.Apps[0], want) {
			t.Errorf("got %v, want [%v]", resp.Apps, want)
		}
	})
}

func TestAppReadsLostTasksAndRollout(t *testing.T) {
	m := startManager(t, "m1", true)
	for _, n := range []*pb.Node{
		{Name: "w1", Role: pb.RoleWorker, Status: pb.NodeReady},
		{Name: "w2", Role: pb.RoleWorker, Status: pb.NodeDown},
	} {
		m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: n})
	}
	v1, v2 := webSpec(), webSpec()
	v2.Image = "registry.local/web:v2"
	v3 := proto.Clone(v2).(*pb.AppSpec)
	v3.Replicas = 3 // replicas only: version 3 keeps version 2's tasks
	for _, sp := range []*pb.AppSpec{v1, v2, v3} {
		if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: sp}); err != nil {
			t.Fatalf("deploy: %v", err)
		}
	}
	// Tasks carry the stored spec of their version, defaults applied.
	app := m.raft.fsm.State().App("web")
	v1, v2 = fsm.SpecOf(app, 1), fsm.SpecOf(app, 2)
	task := func(id string, version uint64, sp *pb.AppSpec, node, state string,
		healthy bool) *pb.Task {
		return &pb.Task{Id: id, App: "web", Version: version, Spec: sp,
			Node: node, Desired: pb.DesiredRun, State: state, Healthy: healthy}
	}
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{
		task("old-ok", 1, v1, "w1", pb.TaskRunning, true),
		task("old-lost", 1, v1, "w2", pb.TaskRunning, true),
		task("new-ok", 2, v2, "w1", pb.TaskRunning, true),
		task("new-sick", 2, v2, "w1", pb.TaskRunning, false),
		task("new-lost", 2, v2, "w2", pb.TaskStarting, false),
		task("new-failed", 2, v2, "w2", pb.TaskFailed, false),
	}})

	t.Run("status shows tasks on a down node as lost", func(t *testing.T) {
		resp, err := m.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "web"})
		if err != nil {
			t.Fatalf("app status: %v", err)
		}
		want := map[string]struct {
			state   string
			healthy bool
		}{
			"old-ok":     {pb.TaskRunning, true},
			"old-lost":   {pb.TaskLost, false},
			"new-ok":     {pb.TaskRunning, true},
			"new-sick":   {pb.TaskRunning, false},
			"new-lost":   {pb.TaskLost, false},
			"new-failed": {pb.TaskFailed, false},
		}
		if len(resp.Tasks) != len(want) {
			t.Fatalf("got %d tasks, want %d", len(resp.Tasks), len(want))
		}
		for _, tk := range resp.Tasks {
			w := want[tk.Id]
			if tk.State != w.state || tk.Healthy != w.healthy {
				t.Errorf("%s: state %q healthy %v, want %q %v",
					tk.Id, tk.State, tk.Healthy, w.state, w.healthy)
			}
		}
		if st := m.raft.fsm.State().Task("old-lost"); st.State != pb.TaskRunning {
			t.Errorf("stored task changed to %q: status must not write", st.State)
		}
	})

	t.Run("list counts live tasks and healthy ones of the current version", func(t *testing.T) {
		resp, err := m.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
		if err != nil {
			t.Fatalf("list apps: %v", err)
		}
		if len(resp.Apps) != 1 {
			t.Fatalf("got %d apps, want 1", len(resp.Apps))
		}
		// Running: old-ok, new-ok, new-sick. Healthy: new-ok only.
		if got := resp.Apps[0]; got.Version != 3 || got.Running != 3 ||
			got.Healthy != 1 {
			t.Errorf("got version %d running %d healthy %d, want 3 3 1",
				got.Version, got.Running, got.Healthy)
		}
	})
}

func TestAppWrites(t *testing.T) {
	m := startManager(t, "m1", true)
	if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}

	tests := []struct {
		name string
		call func(ctx context.Context) error
		code codes.Code
		text string
	}{
		{"scale negative", func(ctx context.Context) error {
			_, err := m.ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "web", Replicas: -1})
			return err
		}, codes.InvalidArgument, "replicas"},
		{"scale above the maximum", func(ctx context.Context) error {
			_, err := m.ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "web", Replicas: math.MaxInt32})
			return err
		}, codes.InvalidArgument, "replicas 2147483647: above the maximum of 1000"},
		{"scale unknown", func(ctx context.Context) error {
			_, err := m.ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "nope", Replicas: 1})
			return err
		}, codes.NotFound, `app "nope"`},
		{"scale", func(ctx context.Context) error {
			_, err := m.ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "web", Replicas: 5})
			return err
		}, codes.OK, ""},
		{"rollback without history", func(ctx context.Context) error {
			_, err := m.ctl.RollbackApp(ctx, &pb.RollbackAppRequest{Name: "web"})
			return err
		}, codes.FailedPrecondition, `app "web"`},
		{"remove unknown", func(ctx context.Context) error {
			_, err := m.ctl.RemoveApp(ctx, &pb.RemoveAppRequest{Name: "nope"})
			return err
		}, codes.NotFound, `app "nope"`},
		{"remove", func(ctx context.Context) error {
			_, err := m.ctl.RemoveApp(ctx, &pb.RemoveAppRequest{Name: "web"})
			return err
		}, codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctxT(t))
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.text)
		})
	}
	if app := m.raft.fsm.State().App("web"); app != nil {
		t.Errorf("app web still stored after remove: %v", app)
	}
}

func TestRollbackApp(t *testing.T) {
	m := startManager(t, "m1", true)
	v2 := webSpec()
	v2.Image = "registry.local/web:v2"
	for _, sp := range []*pb.AppSpec{webSpec(), v2} {
		if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: sp}); err != nil {
			t.Fatalf("deploy %s: %v", sp.Image, err)
		}
	}
	resp, err := m.ctl.RollbackApp(ctxT(t), &pb.RollbackAppRequest{Name: "web"})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if resp.Version != 1 || resp.DeploymentId == "" {
		t.Errorf("response %v, want version 1 with a deployment", resp)
	}
	if v := m.raft.fsm.State().App("web").GetVersion(); v != 1 {
		t.Errorf("app version %d after rollback, want 1", v)
	}

	// Version 1 has nothing older: the message is the reason alone.
	_, err = m.ctl.RollbackApp(ctxT(t), &pb.RollbackAppRequest{Name: "web"})
	st, _ := status.FromError(err)
	const want = `app "web": no older version to roll back to`
	if st.Code() != codes.FailedPrecondition || st.Message() != want {
		t.Errorf("second rollback: %v, want FailedPrecondition %q", err, want)
	}
}

func TestJoinToken(t *testing.T) {
	m := startManager(t, "m1", true)
	tests := []struct {
		role  string
		token string
		code  codes.Code
	}{
		{pb.RoleWorker, workerToken, codes.OK},
		{pb.RoleManager, managerToken, codes.OK},
		{"admin", "", codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.role, func(t *testing.T) {
			resp, err := m.ctl.JoinToken(ctxT(t), &pb.JoinTokenRequest{Role: tc.role})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, "role")
				return
			}
			if err != nil || resp.Token != tc.token {
				t.Errorf("got %v, %v; want token %q", resp, err, tc.token)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	m := startManager(t, "m1", true)
	tests := []struct {
		name string
		req  *pb.RegisterRequest
		code codes.Code
		text string
	}{
		{"wrong token", &pb.RegisterRequest{Token: "guess", Name: "w1", Address: "10.0.0.1"},
			codes.PermissionDenied, "invalid join token"},
		{"no token", &pb.RegisterRequest{Name: "w1", Address: "10.0.0.1"},
			codes.PermissionDenied, "invalid join token"},
		{"manager's name", &pb.RegisterRequest{Token: workerToken, Name: "m1", Address: "10.0.0.1"},
			codes.PermissionDenied, `node "m1": name is taken by a manager`},
		{"no name", &pb.RegisterRequest{Token: workerToken, Address: "10.0.0.1"},
			codes.InvalidArgument, "name"},
		{"ok", &pb.RegisterRequest{Token: workerToken, Name: "w1", Address: "10.0.0.1", GossipPort: 7073},
			codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := m.worker.Register(ctxT(t), tc.req)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.text)
				return
			}
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if len(resp.Managers) != 1 || resp.Managers[0].Name != "m1" {
				t.Errorf("managers %v, want m1", resp.Managers)
			}
			n := m.raft.fsm.State().Node("w1")
			if n.GetRole() != pb.RoleWorker || n.GetStatus() != pb.NodeReady {
				t.Errorf("node %v, want a ready worker", n)
			}
		})
	}
	if n := m.raft.fsm.State().Node("m1"); n.GetRole() != pb.RoleManager {
		t.Errorf("manager node was overwritten: %v", n)
	}
}

// TestRegisterNameInUse checks that a second worker cannot take the name of
// a live one (both would run its tasks), while the same worker may register
// again and a down worker's name may be taken over.
func TestRegisterNameInUse(t *testing.T) {
	tests := []struct {
		name    string
		status  string // of the stored w2 at 127.0.60.12
		address string // of the new registration
		code    codes.Code
	}{
		{"other address, ready", pb.NodeReady, "127.0.60.13", codes.AlreadyExists},
		{"other address, draining", pb.NodeDraining, "127.0.60.13", codes.AlreadyExists},
		{"same address", pb.NodeReady, "127.0.60.12", codes.OK},
		{"other address, down", pb.NodeDown, "127.0.60.13", codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := startManager(t, "m1", true)
			m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
				Name: "w2", Role: pb.RoleWorker, Address: "127.0.60.12", Status: tc.status,
			}})

			_, err := m.worker.Register(ctxT(t), &pb.RegisterRequest{
				Token: workerToken, Name: "w2", Address: tc.address})
			got := m.raft.fsm.State().Node("w2").GetAddress()
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, `node name "w2" is in use by 127.0.60.12`)
				if got != "127.0.60.12" {
					t.Errorf("stored address %s, want 127.0.60.12 kept", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if got != tc.address {
				t.Errorf("stored address %s, want %s", got, tc.address)
			}
		})
	}
}

func TestAssignmentsAndReport(t *testing.T) {
	m := startManager(t, "m1", true)
	m.addWorker(t, "w1")
	ctx := ctxT(t)
	stream, err := m.worker.Assignments(ctx, &pb.AssignmentsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("assignments: %v", err)
	}
	recvIDs := func() []string {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		var ids []string
		for _, task := range resp.Tasks {
			ids = append(ids, task.Id)
		}
		return ids
	}

	if ids := recvIDs(); len(ids) != 0 {
		t.Fatalf("first list %v, want empty", ids)
	}

	// A task on another node changes nothing for w1; the next list w1
	// sees must be the one with its own two tasks.
	plan := func(id, node string) *pb.PlanCmd {
		return &pb.PlanCmd{Create: []*pb.Task{{Id: id, App: "web", Version: 1,
			Node: node, Desired: pb.DesiredRun, State: pb.TaskPending}}}
	}
	m.raft.mustApply(t, fsm.PlanType, plan("t1", "w1"))
	if ids := recvIDs(); strings.Join(ids, ",") != "t1" {
		t.Fatalf("list %v, want t1", ids)
	}
	m.raft.mustApply(t, fsm.PlanType, plan("t2", "w2"))
	m.raft.mustApply(t, fsm.PlanType, plan("t3", "w1"))
	if ids := recvIDs(); strings.Join(ids, ",") != "t1,t3" {
		t.Fatalf("list %v, want t1,t3", ids)
	}

	// A report lands in the store and is streamed back.
	_, err = m.worker.Report(ctx, &pb.ReportRequest{Node: "w1", Reports: []*pb.TaskReport{
		{TaskId: "t1", State: pb.TaskRunning, Healthy: true},
	}})
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	got := resp.Tasks[0]
	if got.State != pb.TaskRunning || got.HealthySince != time.Unix(1000, 0).UnixNano() {
		t.Errorf("task after report %v, want running, healthy since the leader's now", got)
	}
}

func TestAssignmentsEndOnShutdown(t *testing.T) {
	m := startManager(t, "m1", true)
	m.addWorker(t, "w1")
	stream, err := m.worker.Assignments(ctxT(t), &pb.AssignmentsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("assignments: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("recv: %v", err)
	}
	if err := m.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.Unavailable)
	if err := m.srv.Shutdown(ctxT(t)); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

func TestForwarding(t *testing.T) {
	leader := startManager(t, "m1", true)
	follower := startManager(t, "m2", false)
	follower.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })
	follower.addManager(t, leader)

	t.Run("deploy goes to the leader", func(t *testing.T) {
		resp, err := follower.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()})
		if err != nil {
			t.Fatalf("deploy through follower: %v", err)
		}
		if !resp.Changed {
			t.Errorf("response %v, want changed", resp)
		}
		if leader.raft.fsm.State().App("web") == nil {
			t.Error("leader's store has no app web")
		}
		if follower.raft.fsm.State().App("web") != nil {
			t.Error("follower stored the app itself")
		}
	})

	t.Run("reads go to the leader", func(t *testing.T) {
		resp, err := follower.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "web"})
		if err != nil {
			t.Fatalf("status through follower: %v", err)
		}
		if resp.App.GetName() != "web" {
			t.Errorf("got app %v, want web", resp.App)
		}
	})

	t.Run("http through the follower", func(t *testing.T) {
		resp, err := http.Get("http://" + follower.srv.HTTPAddr() + "/v1/apps")
		if err != nil {
			t.Fatalf("GET /v1/apps on follower: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"web"`) {
			t.Errorf("status %d body %s, want the leader's app web", resp.StatusCode, body)
		}
	})

	t.Run("errors come back unchanged", func(t *testing.T) {
		_, err := follower.ctl.AppStatus(ctxT(t), &pb.AppStatusRequest{Name: "nope"})
		wantCode(t, err, codes.NotFound, `app "nope"`)
	})

	t.Run("register and report go to the leader", func(t *testing.T) {
		_, err := follower.worker.Register(ctxT(t), &pb.RegisterRequest{
			Token: workerToken, Name: "w1", Address: "10.0.0.1"})
		if err != nil {
			t.Fatalf("register through follower: %v", err)
		}
		if leader.raft.fsm.State().Node("w1") == nil {
			t.Error("leader's store has no node w1")
		}
	})

	t.Run("drain goes to the leader", func(t *testing.T) {
		_, err := follower.ctl.DrainNode(ctxT(t), &pb.DrainNodeRequest{Name: "w1"})
		if err != nil {
			t.Fatalf("drain through follower: %v", err)
		}
		if n := leader.raft.fsm.State().Node("w1"); n.GetStatus() != pb.NodeDraining {
			t.Errorf("leader's node w1 = %v, want draining", n)
		}
	})

	t.Run("no leader", func(t *testing.T) {
		follower.raft.set(func(r *fakeRaft) { r.leaderName = "" })
		_, err := follower.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
		wantCode(t, err, codes.Unavailable, "no leader")
	})

	t.Run("leader without address", func(t *testing.T) {
		follower.raft.set(func(r *fakeRaft) { r.leaderName = "m9" })
		_, err := follower.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
		wantCode(t, err, codes.Unavailable, "no leader", `"m9"`)
	})

	t.Run("forwarded twice", func(t *testing.T) {
		// The leader lost leadership to the follower's old view: the
		// follower points at m1, m1 points back at m2.
		leader.raft.set(func(r *fakeRaft) { r.leader, r.leaderName = false, "m2" })
		leader.addManager(t, follower)
		follower.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })
		_, err := follower.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
		wantCode(t, err, codes.Unavailable, "no leader")
	})
}

// A forwarded call whose leader hangs (cut off from the others) ends as
// soon as the follower knows another leader, not at the caller's
// deadline, and says the call may or may not have taken effect.
func TestForwardEndsWhenLeaderMoves(t *testing.T) {
	leader := startManager(t, "m1", true)
	follower := startManager(t, "m2", false)
	follower.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })
	follower.addManager(t, leader)

	release := make(chan struct{})
	defer close(release)
	reached := make(chan struct{})
	leader.raft.set(func(r *fakeRaft) {
		r.beforePropose = func() { close(reached); <-release }
	})

	errc := make(chan error, 1)
	go func() {
		_, err := follower.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()})
		errc <- err
	}()
	select {
	case <-reached:
	case err := <-errc:
		t.Fatalf("deploy returned %v before reaching the leader", err)
	case <-time.After(testTimeout):
		t.Fatal("the forwarded deploy never reached the leader")
	}
	moved := time.Now()
	follower.raft.set(func(r *fakeRaft) { r.leaderName = "m3" })
	select {
	case err := <-errc:
		wantCode(t, err, codes.Unavailable, "leadership moved", `"m1" to "m3"`, "may or may not")
		t.Logf("ended %s after the move: %v", time.Since(moved), err)
	case <-time.After(testTimeout):
		t.Fatal("the forwarded deploy still waits on the old leader")
	}
}

func TestForwardingToLeaderNotInStore(t *testing.T) {
	leader := startManager(t, "m1", true)

	// Right after an election the follower's store has no node for the
	// new leader; only the resolver (gossip, in a manager) knows it.
	tests := []struct {
		name     string
		resolver map[string]string // nil: no resolver
		wantErr  bool
	}{
		{name: "resolver knows the leader",
			resolver: map[string]string{"m1": leader.srv.RPCAddr()}},
		{name: "resolver does not", resolver: map[string]string{},
			wantErr: true},
		{name: "no resolver", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			withResolver := func(c *Config) {
				if tc.resolver == nil {
					return
				}
				c.PeerRPCAddr = func(name string) (string, bool) {
					addr, ok := tc.resolver[name]
					return addr, ok
				}
			}
			follower := startManager(t, "m2", false, withResolver)
			follower.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })

			_, err := follower.ctl.ListApps(ctxT(t), &pb.ListAppsRequest{})
			if tc.wantErr {
				wantCode(t, err, codes.Unavailable, "no leader", `"m1"`)
				return
			}
			if err != nil {
				t.Fatalf("list apps through follower: %v", err)
			}
		})
	}
}

func TestClusterStatus(t *testing.T) {
	engine := func(st deploy.Stats) func(*Config) {
		return func(c *Config) { c.Engine = func() deploy.Stats { return st } }
	}
	leader := startManager(t, "m1", true, engine(deploy.Stats{Enabled: true, Steps: 7, Proposals: 3}))
	follower := startManager(t, "m2", false, engine(deploy.Stats{Steps: 2, Proposals: 1}))
	follower.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })
	leader.addManager(t, follower)
	leader.raft.set(func(r *fakeRaft) {
		r.servers = []raftnode.Server{
			{Name: "m3", Address: "127.0.0.3:7072", Voter: true},
			{Name: "m1", Address: "127.0.0.1:7072", Voter: true},
			{Name: "m2", Address: "127.0.0.2:7072", Voter: true},
		}
	})

	resp, err := leader.ctl.ClusterStatus(ctxT(t), &pb.ClusterStatusRequest{})
	if err != nil {
		t.Fatalf("cluster status: %v", err)
	}
	if resp.Leader != "m1" {
		t.Errorf("leader %q, want m1", resp.Leader)
	}
	want := map[string]string{"m1": "leader", "m2": "follower", "m3": stateUnreachable}
	if len(resp.Managers) != len(want) {
		t.Fatalf("managers %v, want %d", resp.Managers, len(want))
	}
	var names []string
	for _, st := range resp.Managers {
		names = append(names, st.Name)
		if st.State != want[st.Name] || !st.Voter || st.Address == "" {
			t.Errorf("manager %v, want state %q, voter, with an address", st, want[st.Name])
		}
	}
	if !slices.Equal(names, []string{"m1", "m2", "m3"}) {
		t.Errorf("managers in the order %v, want by name", names)
	}

	// Each manager reports its own engine, the leader's own directly
	// and the follower's over RaftStats; m3 did not answer.
	wantEngine := map[string][3]uint64{"m1": {1, 7, 3}, "m2": {0, 2, 1}, "m3": {0, 0, 0}}
	for _, st := range resp.Managers {
		enabled := uint64(0)
		if st.EngineEnabled {
			enabled = 1
		}
		got := [3]uint64{enabled, st.EngineSteps, st.EngineProposals}
		if got != wantEngine[st.Name] {
			t.Errorf("manager %s: engine enabled/steps/proposals %v, want %v",
				st.Name, got, wantEngine[st.Name])
		}
	}
}

func TestRecoverFromPanic(t *testing.T) {
	m := startManager(t, "m1", true)
	m.raft.set(func(r *fakeRaft) { r.panicStats = true })
	_, err := pb.NewPeerClient(m.conn).RaftStats(ctxT(t), &pb.RaftStatsRequest{})
	wantCode(t, err, codes.Internal)

	m.raft.set(func(r *fakeRaft) { r.panicStats = false })
	st, err := pb.NewPeerClient(m.conn).RaftStats(ctxT(t), &pb.RaftStatsRequest{})
	if err != nil || st.GetName() != "m1" {
		t.Errorf("after a panic got %v, %v; want m1's stats", st, err)
	}
}

// A known path asked with another method answers 405, and a path that
// is not UTF-8 once decoded 400, both as {code, message}; neither is a
// server error.
func TestHTTPRoutingErrors(t *testing.T) {
	m := startManager(t, "m1", true)
	base := "http://" + m.srv.HTTPAddr()
	for _, tc := range []struct {
		method, path string
		status       int
		fragment     string
	}{
		{http.MethodPut, "/v1/apps", http.StatusMethodNotAllowed, "not allowed"},
		{http.MethodPatch, "/v1/apps/web", http.StatusMethodNotAllowed, "not allowed"},
		{http.MethodPost, "/v1/apps/%ff%fe/scale", http.StatusBadRequest, "UTF-8"},
	} {
		req, err := http.NewRequestWithContext(ctxT(t), tc.method, base+tc.path,
			strings.NewReader(`{"replicas":1}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if resp.StatusCode != tc.status || json.Unmarshal(body, &e) != nil || e.Code == 0 ||
			!strings.Contains(e.Message, tc.fragment) {
			t.Errorf("%s %s: %d %s, want %d with {code, message} saying %q",
				tc.method, tc.path, resp.StatusCode, body, tc.status, tc.fragment)
		}
	}
}

func TestHTTPGateway(t *testing.T) {
	m := startManager(t, "m1", true)
	if _, err := m.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	base := "http://" + m.srv.HTTPAddr()

	get := func(t *testing.T, path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: read body: %v", path, err)
		}
		return resp, body
	}

	t.Run("app status", func(t *testing.T) {
		resp, body := get(t, "/v1/apps/web")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var got struct {
			App struct {
				Name          string `json:"name"`
				StableVersion string `json:"stable_version"`
			} `json:"app"`
			Tasks []any `json:"tasks"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		// Proto names, and zero values emitted.
		if got.App.Name != "web" || got.App.StableVersion == "" || got.Tasks == nil {
			t.Errorf("body %s, want app web with proto field names", body)
		}
	})

	t.Run("unknown app is 404", func(t *testing.T) {
		resp, body := get(t, "/v1/apps/nope")
		var got struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		if resp.StatusCode != http.StatusNotFound || got.Code != int(codes.NotFound) ||
			!strings.Contains(got.Message, `app "nope"`) {
			t.Errorf("status %d body %s, want 404 naming the app", resp.StatusCode, body)
		}
	})

	t.Run("bad spec is 400", func(t *testing.T) {
		body := `{"name": "api", "image": "x", "replicaz": 3}`
		resp, err := http.Post(base+"/v1/apps", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST /v1/apps: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d for an unknown field, want 400", resp.StatusCode)
		}
	})

	t.Run("replicas above the maximum is 400", func(t *testing.T) {
		body := `{"name": "api", "image": "x", "replicas": 2147483647}`
		resp, err := http.Post(base+"/v1/apps", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST /v1/apps: %v", err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), "replicas") {
			t.Errorf("status %d body %s, want 400 naming replicas", resp.StatusCode, got)
		}
	})

	bodyLimit := []struct {
		name    string
		path    string
		size    int
		chunked bool // no Content-Length: the limit must hold while reading
		want    int
	}{
		{"body at the limit is read", "/v1/apps", MaxRequestBody, false, http.StatusBadRequest},
		{"body over the limit is 413", "/v1/apps", MaxRequestBody + 1, false, http.StatusRequestEntityTooLarge},
		{"chunked body over the limit is 413", "/v1/apps", 2 * MaxRequestBody, true, http.StatusRequestEntityTooLarge},
		// The restore route reads it whole and refuses it as not a
		// snapshot, not as too large.
		{"snapshot routes are exempt", "/v1/snapshot", MaxRequestBody + 1, false, http.StatusBadRequest},
	}
	for _, tc := range bodyLimit {
		t.Run(tc.name, func(t *testing.T) {
			// A JSON string padded with spaces: valid until it ends.
			payload := `{"name": "` + strings.Repeat(" ", tc.size-len(`{"name": ""}`)) + `"}`
			var r io.Reader = strings.NewReader(payload)
			if tc.chunked {
				r = io.MultiReader(r) // hides the length from net/http
			}
			req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, base+tc.path, r)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", tc.path, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d body %.200s, want %d", resp.StatusCode, got, tc.want)
			}
			limit := fmt.Sprintf("limit of %d bytes", MaxRequestBody)
			if tc.want == http.StatusRequestEntityTooLarge && !strings.Contains(string(got), limit) {
				t.Errorf("body %s, want it to name the %s", got, limit)
			}
		})
	}

	t.Run("snapshot", func(t *testing.T) {
		resp, body := get(t, "/v1/snapshot")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != sqliteContentType {
			t.Errorf("content type %q, want %q", ct, sqliteContentType)
		}
		if !bytes.HasPrefix(body, []byte("SQLite format 3")) {
			t.Errorf("snapshot starts with %q, want a SQLite header", body[:min(16, len(body))])
		}
	})

	t.Run("health", func(t *testing.T) {
		resp, body := get(t, "/v1/health")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d: %s", resp.StatusCode, body)
		}
	})
}

func TestToStatus(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code codes.Code
		text string
	}{
		{"app not found", fmt.Errorf("app %q: %w", "web", fsm.ErrAppNotFound), codes.NotFound, `app "web"`},
		{"invalid", fmt.Errorf("scale: %w", fsm.ErrInvalid), codes.InvalidArgument, "scale"},
		{"not leader", fmt.Errorf("deploy: %w", raft.ErrNotLeader), codes.Unavailable, "no leader"},
		{"no leader", ErrNoLeader, codes.Unavailable, "no leader"},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "x"},
		{"status passes", status.Error(codes.Aborted, "kept"), codes.Aborted, "kept"},
		{"other", errors.New("disk on fire"), codes.Internal, "disk on fire"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, toStatus(tc.err), tc.code, tc.text)
		})
	}
}

// TestStreamsEndOnLostLeader: a follower that stops hearing from a leader
// (alone on the wrong side of a partition) ends its workers' streams, so
// that they move to a manager that follows the cluster; while it hears
// from one, the streams go on.
func TestStreamsEndOnLostLeader(t *testing.T) {
	m := startManager(t, "m2", false)
	m.addWorker(t, "w1")
	m.raft.set(func(r *fakeRaft) {
		r.stats = &pb.ManagerStatus{Name: "m2", State: "follower",
			LastContact: int64(100 * time.Millisecond)}
	})
	ctx := ctxT(t)
	assign, err := m.worker.Assignments(ctx, &pb.AssignmentsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("assignments: %v", err)
	}
	ends, err := m.worker.Endpoints(ctx, &pb.EndpointsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	if _, err := assign.Recv(); err != nil {
		t.Fatalf("first assignments: %v", err)
	}
	if _, err := ends.Recv(); err != nil {
		t.Fatalf("first endpoints: %v", err)
	}

	// In touch: a new list still arrives.
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{{Id: "t1",
		App: "web", Version: 1, Node: "w1", Desired: pb.DesiredRun}}})
	if _, err := assign.Recv(); err != nil {
		t.Fatalf("assignments while in touch with the leader: %v", err)
	}

	// Out of touch: both streams end with Unavailable.
	m.raft.set(func(r *fakeRaft) {
		r.stats = &pb.ManagerStatus{Name: "m2", State: "follower",
			LastContact: int64(3 * time.Second)}
	})
	for name, recv := range map[string]func() error{
		"assignments": func() error { _, err := assign.Recv(); return err },
		"endpoints":   func() error { _, err := ends.Recv(); return err },
	} {
		err := recv()
		if status.Code(err) != codes.Unavailable ||
			!strings.Contains(err.Error(), "has not heard from a leader") {
			t.Errorf("%s stream ended with %v, want Unavailable: no leader heard", name, err)
		}
	}
}
