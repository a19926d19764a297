package rpc

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// trafficFixture stores workers w1 (ready), w2 (down) and w3 (draining)
// and version 1 of app web with an ingress port.
func trafficFixture(t *testing.T, m *testManager) {
	t.Helper()
	for _, n := range []*pb.Node{
		{Name: "w1", Role: pb.RoleWorker, Address: "10.0.0.1", Status: pb.NodeReady},
		{Name: "w2", Role: pb.RoleWorker, Address: "10.0.0.2", Status: pb.NodeDown},
		{Name: "w3", Role: pb.RoleWorker, Address: "10.0.0.3", Status: pb.NodeDraining},
	} {
		m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: n})
	}
	sp := webSpec()
	sp.Ports = []*pb.Port{{Name: "http", Protocol: "http", Ingress: 8080}}
	m.raft.mustApply(t, fsm.DeployAppType, &pb.DeployAppCmd{App: &pb.App{
		Name: "web", Version: 1,
		Versions: []*pb.AppVersion{{Version: 1, Spec: sp}},
	}})
}

// endpointTask is a task of web, running and healthy on w1 unless
// changed by the options.
func endpointTask(id string, opts ...func(*pb.Task)) *pb.Task {
	t := &pb.Task{Id: id, App: "web", Version: 1, Node: "w1",
		Address: "10.0.0.1", Ports: map[string]int32{"http": 20000},
		Desired: pb.DesiredRun, State: pb.TaskRunning, Healthy: true}
	for _, o := range opts {
		o(t)
	}
	return t
}

// endpointIDs lists the task ids of app's endpoints in resp.
func endpointIDs(resp *pb.EndpointsResponse, app string) string {
	var ids []string
	for _, svc := range resp.GetServices() {
		if svc.GetApp() != app {
			continue
		}
		for _, e := range svc.GetEndpoints() {
			ids = append(ids, e.GetTaskId())
		}
	}
	return strings.Join(ids, ",")
}

func TestEndpointSet(t *testing.T) {
	m := startManager(t, "m1", true)
	trafficFixture(t, m)

	tests := []struct {
		id   string
		task *pb.Task
		want bool
	}{
		{"ok", endpointTask("ok"), true},
		{"unhealthy", endpointTask("unhealthy",
			func(t *pb.Task) { t.Healthy = false }), false},
		{"starting", endpointTask("starting",
			func(t *pb.Task) { t.State, t.Healthy = pb.TaskStarting, false }), false},
		{"asked to stop", endpointTask("asked-to-stop",
			func(t *pb.Task) { t.Desired = pb.DesiredStop }), false},
		{"draining", endpointTask("draining", func(t *pb.Task) {
			t.Desired, t.State = pb.DesiredStop, pb.TaskDraining
		}), false},
		{"on a down node", endpointTask("down-node",
			func(t *pb.Task) { t.Node = "w2" }), false},
		{"on an unknown node", endpointTask("unknown-node",
			func(t *pb.Task) { t.Node = "w9" }), false},
		{"on a draining node", endpointTask("draining-node",
			func(t *pb.Task) { t.Node, t.Address = "w3", "10.0.0.3" }), true},
	}
	plan := &pb.PlanCmd{}
	for _, tc := range tests {
		plan.Create = append(plan.Create, tc.task)
	}
	m.raft.mustApply(t, fsm.PlanType, plan)

	services := endpointSet(m.raft.fsm.State().Snapshot())
	if len(services) != 1 || services[0].GetApp() != "web" {
		t.Fatalf("services %v, want web only", services)
	}
	web := services[0]
	if ps := web.GetPorts(); len(ps) != 1 || ps[0].GetIngress() != 8080 {
		t.Errorf("ports %v, want http with ingress 8080", ps)
	}
	got := make(map[string]*pb.Endpoint)
	for _, e := range web.GetEndpoints() {
		got[e.GetTaskId()] = e
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			e, in := got[tc.task.Id]
			if in != tc.want {
				t.Fatalf("in the set: %v, want %v", in, tc.want)
			}
			if in && (e.GetAddress() != tc.task.Address ||
				e.GetPorts()["http"] != 20000) {
				t.Errorf("endpoint %v, want %s with http on 20000",
					e, tc.task.Address)
			}
		})
	}
}

func TestEndpointsStream(t *testing.T) {
	m := startManager(t, "m1", true)
	trafficFixture(t, m)
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{
		endpointTask("t1"), endpointTask("t2"),
		endpointTask("sick", func(t *pb.Task) { t.Healthy = false }),
	}})

	stream, err := m.worker.Endpoints(ctxT(t), &pb.EndpointsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	recv := func(t *testing.T) *pb.EndpointsResponse {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		return resp
	}

	first := recv(t)
	if ids := endpointIDs(first, "web"); ids != "t1,t2" {
		t.Fatalf("first set %q, want t1,t2", ids)
	}
	if want := m.raft.fsm.State().Index(); first.GetIndex() != want {
		t.Errorf("first index %d, want the store's %d", first.GetIndex(), want)
	}

	// A change outside the set sends nothing: the next set the stream
	// gives must be the one without t1.
	m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name: "w4", Role: pb.RoleWorker, Status: pb.NodeReady}})
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Stop: []string{"t1"},
		StopReason: "replaced"})
	stopIndex := m.raft.fsm.State().Task("t1").GetStopIndex()
	resp := recv(t)
	if ids := endpointIDs(resp, "web"); ids != "t2" {
		t.Fatalf("set after t1 stopped %q, want t2", ids)
	}
	if resp.GetIndex() < stopIndex {
		t.Errorf("index %d, want at least t1's stop index %d",
			resp.GetIndex(), stopIndex)
	}

	// A task asked to stop that was never in the set leaves the set as
	// it was, but the worker still needs an index past its stop_index
	// to acknowledge.
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Stop: []string{"sick"},
		StopReason: "replaced"})
	stopIndex = m.raft.fsm.State().Task("sick").GetStopIndex()
	resp = recv(t)
	if ids := endpointIDs(resp, "web"); ids != "t2" {
		t.Fatalf("set after sick stopped %q, want t2", ids)
	}
	if resp.GetIndex() < stopIndex {
		t.Errorf("index %d, want at least sick's stop index %d",
			resp.GetIndex(), stopIndex)
	}
}

func TestEndpointsStreamNeedsNode(t *testing.T) {
	m := startManager(t, "m1", true)
	stream, err := m.worker.Endpoints(ctxT(t), &pb.EndpointsRequest{})
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument, "node")
}

func TestEndpointsServedByFollower(t *testing.T) {
	// No leader at all: the stream still serves the local replica.
	m := startManager(t, "m2", false)
	trafficFixture(t, m)
	m.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{
		endpointTask("t1")}})

	stream, err := m.worker.Endpoints(ctxT(t), &pb.EndpointsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv from a follower without leader: %v", err)
	}
	if ids := endpointIDs(resp, "web"); ids != "t1" {
		t.Errorf("set %q, want t1", ids)
	}
}

func TestReportEndpointsIndex(t *testing.T) {
	m := startManager(t, "m1", true)
	trafficFixture(t, m)

	// An acknowledgement alone, with no task report, is recorded.
	_, err := m.worker.Report(ctxT(t), &pb.ReportRequest{Node: "w1",
		EndpointsIndex: 5})
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if n := m.raft.fsm.State().Node("w1"); n.GetEndpointsIndex() != 5 {
		t.Errorf("node w1 = %v, want endpoints index 5", n)
	}
}

func TestDrainAndActivateNode(t *testing.T) {
	m := startManager(t, "m1", true)
	trafficFixture(t, m)

	drain := func(name string) func(*testing.T) error {
		return func(t *testing.T) error {
			_, err := m.ctl.DrainNode(ctxT(t), &pb.DrainNodeRequest{Name: name})
			return err
		}
	}
	activate := func(name string) func(*testing.T) error {
		return func(t *testing.T) error {
			_, err := m.ctl.ActivateNode(ctxT(t), &pb.ActivateNodeRequest{Name: name})
			return err
		}
	}
	tests := []struct {
		name   string
		call   func(*testing.T) error
		code   codes.Code
		text   string
		status string // w1's status afterwards, when the call succeeds
	}{
		{name: "drain unknown", call: drain("w9"), code: codes.NotFound,
			text: `node "w9"`},
		{name: "drain a manager", call: drain("m1"), code: codes.InvalidArgument,
			text: `node "m1"`},
		{name: "drain without name", call: drain(""), code: codes.InvalidArgument,
			text: "name"},
		{name: "drain a down node", call: drain("w2"),
			code: codes.FailedPrecondition, text: `node "w2"`},
		{name: "activate unknown", call: activate("w9"), code: codes.NotFound,
			text: `node "w9"`},
		{name: "drain", call: drain("w1"), status: pb.NodeDraining},
		{name: "drain again", call: drain("w1"), status: pb.NodeDraining},
		{name: "activate", call: activate("w1"), status: pb.NodeReady},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(t)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.text)
				return
			}
			if err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if n := m.raft.fsm.State().Node("w1"); n.GetStatus() != tc.status {
				t.Errorf("node w1 = %v, want %s", n, tc.status)
			}
		})
	}
	if n := m.raft.fsm.State().Node("m1"); n.GetStatus() != pb.NodeReady {
		t.Errorf("manager m1 = %v, want untouched", n)
	}
}

func TestDrainNodeOverHTTP(t *testing.T) {
	m := startManager(t, "m1", true)
	trafficFixture(t, m)
	base := "http://" + m.srv.HTTPAddr() + "/v1/nodes/"

	tests := []struct {
		path   string
		code   int
		status string
	}{
		{"w1/drain", http.StatusOK, pb.NodeDraining},
		{"w1/activate", http.StatusOK, pb.NodeReady},
		{"w9/drain", http.StatusNotFound, pb.NodeReady},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Post(base+tc.path, "application/json",
				strings.NewReader("{}"))
			if err != nil {
				t.Fatalf("POST %s: %v", tc.path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("POST %s: status %d, want %d", tc.path,
					resp.StatusCode, tc.code)
			}
			if n := m.raft.fsm.State().Node("w1"); n.GetStatus() != tc.status {
				t.Errorf("node w1 = %v, want %s", n, tc.status)
			}
		})
	}
}
