package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// testFSM returns an FSM whose logs go to t.Log.
func testFSM(t *testing.T) *FSM {
	t.Helper()
	return New(hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  hclog.Debug,
		Output: testWriter{t},
	}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// cmd is one command to apply.
type cmd struct {
	typ CommandType
	msg proto.Message
}

// apply encodes and applies c at the given index and returns Apply's
// error. It fails the test if Apply returns anything but nil or an error.
func apply(t *testing.T, f *FSM, index uint64, c cmd) error {
	t.Helper()
	data, err := Encode(c.typ, c.msg)
	if err != nil {
		t.Fatalf("encode %s: %v", c.typ, err)
	}
	switch res := f.Apply(&raft.Log{Index: index, Data: data}).(type) {
	case nil:
		return nil
	case error:
		return res
	default:
		t.Fatalf("apply %s returned %T, want nil or error", c.typ, res)
		return nil
	}
}

// applyAll applies cmds at indexes 1, 2, ... and fails on any error.
func applyAll(t *testing.T, f *FSM, cmds []cmd) {
	t.Helper()
	for i, c := range cmds {
		if err := apply(t, f, uint64(i+1), c); err != nil {
			t.Fatalf("setup command %d (%s): %v", i+1, c.typ, err)
		}
	}
}

// Fixtures.

func node(name string) cmd {
	return cmd{UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name: name, Role: pb.RoleWorker, Address: "127.0.0.1",
		Status: pb.NodeReady, RegisteredAt: 100,
	}}}
}

func spec(name, image string, replicas int32) *pb.AppSpec {
	return &pb.AppSpec{Name: name, Image: image, Replicas: replicas,
		Update: &pb.UpdateSpec{BatchSize: 1}}
}

// deploy makes version `version` of app web, expecting the version
// before it, with a deployment named dep unless dep is empty.
func deploy(version uint64, dep string) cmd {
	app := &pb.App{Name: "web", Version: version, CreatedAt: 10}
	for v := uint64(1); v <= version; v++ {
		app.Versions = append(app.Versions, &pb.AppVersion{
			Version: v, Spec: spec("web", "web:v"+string(rune('0'+v)), 2),
		})
	}
	c := &pb.DeployAppCmd{App: app, ExpectedVersion: version - 1,
		At: int64(1000 * version)}
	if dep != "" {
		c.Deployment = &pb.Deployment{Id: dep, App: "web",
			FromVersion: version - 1, ToVersion: version,
			Status: pb.DeploymentRunning, Replicas: 2}
	}
	return cmd{DeployAppType, c}
}

func task(id, app, nodeName string, version uint64) *pb.Task {
	return &pb.Task{Id: id, App: app, Node: nodeName, Version: version,
		Desired: pb.DesiredRun, State: pb.TaskPending,
		Ports: map[string]int32{"http": 20000}, CreatedAt: 50}
}

func plan(p *pb.PlanCmd) cmd { return cmd{PlanType, p} }

func reports(nodeName string, at int64, rs ...*pb.TaskReport) cmd {
	return cmd{TaskReportsType,
		&pb.TaskReportsCmd{Node: nodeName, At: at, Reports: rs}}
}

// bufferSink is a raft.SnapshotSink into memory.
type bufferSink struct {
	bytes.Buffer
	closed, cancelled bool
}

var _ raft.SnapshotSink = (*bufferSink)(nil)

func (s *bufferSink) ID() string    { return "test" }
func (s *bufferSink) Close() error  { s.closed = true; return nil }
func (s *bufferSink) Cancel() error { s.cancelled = true; return nil }
