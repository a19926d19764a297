package fsm

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestApply(t *testing.T) {
	// Every case applies setup at indexes 1..n, then cmd at n+1.
	cases := []struct {
		name    string
		setup   []cmd
		cmd     cmd
		wantErr error
		check   func(t *testing.T, s *Snapshot, index uint64)
	}{
		{
			name: "upsert node inserts",
			cmd:  node("w1"),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				n := s.Node("w1")
				if n == nil || n.Status != pb.NodeReady {
					t.Fatalf("node w1 = %v, want ready", n)
				}
				if n.CreateIndex != index || n.ModifyIndex != index {
					t.Errorf("indexes = %d/%d, want %d/%d",
						n.CreateIndex, n.ModifyIndex, index, index)
				}
			},
		},
		{
			name:  "upsert node replaces and keeps create_index",
			setup: []cmd{node("w1")},
			cmd: cmd{UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
				Name: "w1", Address: "127.0.0.9", Status: pb.NodeReady}}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				n := s.Node("w1")
				if n.Address != "127.0.0.9" || n.CreateIndex != 1 ||
					n.ModifyIndex != index {
					t.Errorf("node = %v, want new address, create 1, modify %d",
						n, index)
				}
			},
		},
		{
			name:    "upsert node without name",
			cmd:     cmd{UpsertNodeType, &pb.UpsertNodeCmd{}},
			wantErr: ErrInvalid,
		},
		{
			name:  "node status",
			setup: []cmd{node("w1")},
			cmd: cmd{NodeStatusType, &pb.NodeStatusCmd{
				Name: "w1", Status: pb.NodeDown, At: 777}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				n := s.Node("w1")
				if n.Status != pb.NodeDown || n.StatusChangedAt != 777 ||
					n.ModifyIndex != index || n.CreateIndex != 1 {
					t.Errorf("node = %v, want down at 777", n)
				}
			},
		},
		{
			name: "node status of missing node",
			cmd: cmd{NodeStatusType, &pb.NodeStatusCmd{
				Name: "nope", Status: pb.NodeDown}},
			wantErr: ErrNodeNotFound,
		},
		{
			name: "deploy new app",
			cmd:  deploy(1, "d1"),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				a := s.App("web")
				if a == nil || a.Version != 1 || a.CreateIndex != index {
					t.Fatalf("app = %v, want version 1 created at %d", a, index)
				}
				d := s.LatestDeployment("web")
				if d == nil || d.Id != "d1" || d.Status != pb.DeploymentRunning ||
					d.CreateIndex != index {
					t.Errorf("latest deployment = %v, want d1 running", d)
				}
			},
		},
		{
			name:  "deploy supersedes running deployment",
			setup: []cmd{deploy(1, "d1")},
			cmd:   deploy(2, "d2"),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				a := s.App("web")
				if a.Version != 2 || a.CreateIndex != 1 || a.ModifyIndex != index {
					t.Errorf("app = %v, want version 2, create 1, modify %d",
						a, index)
				}
				ds := s.DeploymentsByApp("web")
				if len(ds) != 2 || ds[0].Id != "d1" || ds[1].Id != "d2" {
					t.Fatalf("deployments = %v, want d1, d2", ds)
				}
				if ds[0].Status != pb.DeploymentFailed ||
					ds[0].Description != "superseded by deployment d2" ||
					ds[0].ModifyIndex != index {
					t.Errorf("d1 = %v, want failed, superseded by d2", ds[0])
				}
				if ds[1].Status != pb.DeploymentRunning {
					t.Errorf("d2 status = %q, want running", ds[1].Status)
				}
			},
		},
		{
			name:  "deploy without deployment keeps running one",
			setup: []cmd{deploy(1, "d1")},
			cmd:   deploy(2, ""),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if d := s.Deployment("d1"); d.Status != pb.DeploymentRunning {
					t.Errorf("d1 status = %q, want running", d.Status)
				}
			},
		},
		{
			name:    "deploy existing app with expected version 0",
			setup:   []cmd{deploy(1, "")},
			cmd:     deploy(1, ""),
			wantErr: ErrVersionConflict,
		},
		{
			name:    "deploy with stale expected version",
			setup:   []cmd{deploy(1, ""), deploy(2, "")},
			cmd:     deploy(2, ""),
			wantErr: ErrVersionConflict,
		},
		{
			name:    "deploy missing app with expected version",
			cmd:     deploy(2, "d2"),
			wantErr: ErrVersionConflict,
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if s.App("web") != nil || s.Deployment("d2") != nil {
					t.Errorf("a refused deploy left state behind")
				}
			},
		},
		{
			name:    "deploy without app",
			cmd:     cmd{DeployAppType, &pb.DeployAppCmd{}},
			wantErr: ErrInvalid,
		},
		{
			name: "remove app stops tasks and deletes deployments",
			setup: []cmd{node("w1"), deploy(1, "d1"), plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1),
					task("t2", "web", "w1", 1), task("o1", "other", "w1", 1)},
				Stop: []string{"t2"}, StopReason: "scaled down", At: 5,
			})},
			cmd: cmd{RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: 900}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if s.App("web") != nil {
					t.Errorf("app web still exists")
				}
				t1 := s.Task("t1")
				if t1.Desired != pb.DesiredStop || t1.StopRequestedAt != 900 ||
					t1.Message != "app removed" || t1.ModifyIndex != index ||
					t1.StopIndex != index {
					t.Errorf("t1 = %v, want stop at 900 (index %d), app removed",
						t1, index)
				}
				// t2 was already stopping: its reason, time and index stay.
				if t2 := s.Task("t2"); t2.StopRequestedAt != 5 ||
					t2.Message != "scaled down" || t2.StopIndex != 3 {
					t.Errorf("t2 = %v, want untouched, stop index 3", t2)
				}
				if o1 := s.Task("o1"); o1.Desired != pb.DesiredRun {
					t.Errorf("task of another app stopped: %v", o1)
				}
				// A new app of the same name must not inherit them.
				if ds := s.DeploymentsByApp("web"); len(ds) != 0 {
					t.Errorf("deployments of web = %v, want none", ds)
				}
				if s.Deployment("d1") != nil {
					t.Errorf("deployment d1 still exists")
				}
			},
		},
		{
			name: "remove app keeps deployments of other apps",
			setup: []cmd{deploy(1, "d1"), {DeployAppType, &pb.DeployAppCmd{
				App: &pb.App{Name: "other", Version: 1},
				Deployment: &pb.Deployment{Id: "o1", App: "other",
					ToVersion: 1, Status: pb.DeploymentRunning},
			}}},
			cmd: cmd{RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: 900}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if d := s.Deployment("o1"); d == nil ||
					d.Status != pb.DeploymentRunning {
					t.Errorf("o1 = %v, want running", d)
				}
			},
		},
		{
			name: "new app of a removed name starts without deployments",
			setup: []cmd{deploy(1, "d1"), deploy(2, "d2"),
				{RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: 900}}},
			cmd: deploy(1, ""),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if d := s.LatestDeployment("web"); d != nil {
					t.Errorf("latest deployment = %v, want none", d)
				}
			},
		},
		{
			name: "plan of a removed app does not bring its deployment back",
			setup: []cmd{deploy(1, "d1"),
				{RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: 900}}},
			cmd: plan(&pb.PlanCmd{Deployment: &pb.Deployment{Id: "d1",
				App: "web", Status: pb.DeploymentRunning, Placed: 1}}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if d := s.Deployment("d1"); d != nil {
					t.Errorf("d1 = %v, want none: its app is gone", d)
				}
			},
		},
		{
			name:    "remove missing app",
			cmd:     cmd{RemoveAppType, &pb.RemoveAppCmd{Name: "web"}},
			wantErr: ErrAppNotFound,
		},
		{
			name:  "scale sets replicas of the current version",
			setup: []cmd{deploy(1, ""), deploy(2, "")},
			cmd:   cmd{ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: 5}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				a := s.App("web")
				if got := SpecOf(a, 2).Replicas; got != 5 {
					t.Errorf("version 2 replicas = %d, want 5", got)
				}
				if got := SpecOf(a, 1).Replicas; got != 2 {
					t.Errorf("version 1 replicas = %d, want 2", got)
				}
			},
		},
		{
			name:    "scale negative",
			setup:   []cmd{deploy(1, "")},
			cmd:     cmd{ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: -1}},
			wantErr: ErrInvalid,
		},
		{
			name:    "scale missing app",
			cmd:     cmd{ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: 1}},
			wantErr: ErrAppNotFound,
		},
		{
			name:  "plan creates, stops and moves the app pointer",
			setup: []cmd{node("w1"), deploy(1, ""), deploy(2, "d2")},
			cmd: plan(&pb.PlanCmd{
				Create:     []*pb.Task{task("t1", "web", "w1", 2)},
				Stop:       []string{"missing"},
				Deployment: &pb.Deployment{Id: "d2", App: "web", Placed: 1},
				App:        "web", AppVersion: 2, StableVersion: 1, At: 60,
			}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1 == nil || t1.CreateIndex != index || t1.Node != "w1" {
					t.Fatalf("t1 = %v, want created at %d on w1", t1, index)
				}
				d := s.Deployment("d2")
				if d.Placed != 1 || d.CreateIndex != 3 || d.ModifyIndex != index {
					t.Errorf("d2 = %v, want placed 1, create 3", d)
				}
				a := s.App("web")
				if a.Version != 2 || a.StableVersion != 1 {
					t.Errorf("app version/stable = %d/%d, want 2/1",
						a.Version, a.StableVersion)
				}
				if got := s.TasksByNode("w1"); len(got) != 1 {
					t.Errorf("tasks on w1 = %d, want 1", len(got))
				}
			},
		},
		{
			name: "plan ignores a duplicate task id",
			setup: []cmd{node("w1"), plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1)}})},
			cmd: plan(&pb.PlanCmd{Create: []*pb.Task{
				task("t1", "web", "w2", 9), task("t2", "web", "w1", 1)}}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.Node != "w1" || t1.Version != 1 || t1.CreateIndex != 2 ||
					t1.ModifyIndex != 2 {
					t.Errorf("t1 = %v, want the first placement untouched", t1)
				}
				if got := len(s.TasksByApp("web")); got != 2 {
					t.Errorf("tasks of web = %d, want 2", got)
				}
			},
		},
		{
			name: "plan stop",
			setup: []cmd{plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1)}})},
			cmd: plan(&pb.PlanCmd{Stop: []string{"t1"},
				StopReason: "replaced", At: 70}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.Desired != pb.DesiredStop || t1.StopRequestedAt != 70 ||
					t1.Message != "replaced" || t1.StopIndex != index {
					t.Errorf("t1 = %v, want stop at 70 (index %d), replaced",
						t1, index)
				}
				if t1.OutOfRotation {
					t.Errorf("t1 out of rotation before any plan said so")
				}
			},
		},
		{
			name: "plan stop of a stopping task keeps its stop index",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)}}),
				plan(&pb.PlanCmd{Stop: []string{"t1"}, StopReason: "replaced",
					At: 70}),
			},
			cmd: plan(&pb.PlanCmd{Stop: []string{"t1"},
				StopReason: "scaled down", At: 80}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.StopIndex != 2 || t1.StopRequestedAt != 70 ||
					t1.ModifyIndex != 2 {
					t.Errorf("t1 = %v, want stop index 2 untouched", t1)
				}
			},
		},
		{
			name: "plan rotated out",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{
					task("t1", "web", "w1", 1), task("t2", "web", "w1", 1),
					task("t3", "web", "w1", 1)}}),
				plan(&pb.PlanCmd{Stop: []string{"t1", "t3"},
					StopReason: "replaced", At: 70}),
				plan(&pb.PlanCmd{RotatedOut: []string{"t3"}, At: 75}),
			},
			cmd: plan(&pb.PlanCmd{
				RotatedOut: []string{"t1", "t2", "t3", "missing"}, At: 80}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				tests := []struct {
					id     string
					out    bool
					at     int64
					modify uint64
				}{
					{"t1", true, 80, index}, // stopping: leaves the rotation
					{"t2", false, 0, 1},     // desired run: stays
					{"t3", true, 75, 3},     // already out: keeps its time
				}
				for _, tt := range tests {
					got := s.Task(tt.id)
					if got.OutOfRotation != tt.out ||
						got.OutOfRotationAt != tt.at ||
						got.ModifyIndex != tt.modify {
						t.Errorf("%s = %v, want out_of_rotation %v at %d, "+
							"modify %d", tt.id, got, tt.out, tt.at, tt.modify)
					}
				}
				if s.Task("missing") != nil {
					t.Errorf("rotated_out created task missing")
				}
			},
		},
		{
			name: "plan stops and rotates out in one entry",
			setup: []cmd{plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1)}})},
			cmd: plan(&pb.PlanCmd{Stop: []string{"t1"}, StopReason: "node down",
				RotatedOut: []string{"t1"}, At: 90}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.Desired != pb.DesiredStop || t1.StopIndex != index ||
					!t1.OutOfRotation || t1.OutOfRotationAt != 90 {
					t.Errorf("t1 = %v, want stopped and out of rotation at 90",
						t1)
				}
			},
		},
		{
			name: "plan stop keeps the message of a failed task",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{
					task("t1", "web", "w1", 1), task("t2", "web", "w1", 1),
					task("t3", "web", "w1", 1)}}),
				reports("w1", 300,
					&pb.TaskReport{TaskId: "t1", State: pb.TaskFailed,
						Message: "pull web:v1: not found"},
					&pb.TaskReport{TaskId: "t2", State: pb.TaskRunning,
						Message: "ok"},
					&pb.TaskReport{TaskId: "t3", State: pb.TaskFailed}),
			},
			cmd: plan(&pb.PlanCmd{Stop: []string{"t1", "t2", "t3"},
				StopReason: "failed in deployment d1", At: 70}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				tests := []struct{ id, want string }{
					{"t1", "pull web:v1: not found"},  // its own failure
					{"t2", "failed in deployment d1"}, // not failed
					{"t3", "failed in deployment d1"}, // failed, said nothing
				}
				for _, tt := range tests {
					got := s.Task(tt.id)
					if got.Desired != pb.DesiredStop ||
						got.StopRequestedAt != 70 || got.Message != tt.want {
						t.Errorf("%s = %v, want stop at 70, message %q",
							tt.id, got, tt.want)
					}
				}
			},
		},
		{
			name:    "plan moves the pointer of a missing app",
			cmd:     plan(&pb.PlanCmd{App: "web", AppVersion: 1}),
			wantErr: ErrAppNotFound,
		},
		{
			name:    "plan task without id",
			cmd:     plan(&pb.PlanCmd{Create: []*pb.Task{{App: "web"}}}),
			wantErr: ErrInvalid,
		},
		{
			name: "report becomes healthy",
			setup: []cmd{plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1)}})},
			cmd: reports("w1", 300, &pb.TaskReport{TaskId: "t1",
				State: pb.TaskRunning, Healthy: true, Message: "ok"}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.State != pb.TaskRunning || !t1.Healthy ||
					t1.HealthySince != 300 || !t1.EverHealthy ||
					t1.Message != "ok" || t1.ModifyIndex != index {
					t.Errorf("t1 = %v, want running, healthy since 300", t1)
				}
			},
		},
		{
			name: "report without a message keeps the stop reason",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)}}),
				plan(&pb.PlanCmd{Stop: []string{"t1"}, StopReason: "replaced by version 2"}),
			},
			cmd: reports("w1", 300, &pb.TaskReport{TaskId: "t1",
				State: pb.TaskDraining}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.State != pb.TaskDraining || t1.Message != "replaced by version 2" {
					t.Errorf("t1 = %v, want draining with the stop reason", t1)
				}
			},
		},
		{
			name: "healthy report keeps healthy_since",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)}}),
				reports("w1", 300, &pb.TaskReport{TaskId: "t1",
					State: pb.TaskRunning, Healthy: true}),
			},
			cmd: reports("w1", 400, &pb.TaskReport{TaskId: "t1",
				State: pb.TaskRunning, Healthy: true}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.HealthySince != 300 {
					t.Errorf("healthy_since = %d, want 300", t1.HealthySince)
				}
				if t1.ModifyIndex != 2 {
					t.Errorf("modify_index = %d, want 2: nothing changed",
						t1.ModifyIndex)
				}
			},
		},
		{
			name: "report becomes unhealthy",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)}}),
				reports("w1", 300, &pb.TaskReport{TaskId: "t1",
					State: pb.TaskRunning, Healthy: true}),
			},
			cmd: reports("w1", 400, &pb.TaskReport{TaskId: "t1",
				State: pb.TaskRunning, Message: "check failed"}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.Healthy || t1.HealthySince != 0 || !t1.EverHealthy {
					t.Errorf("t1 = %v, want unhealthy, ever healthy", t1)
				}
			},
		},
		{
			name: "report finished sets finished_at once",
			setup: []cmd{
				plan(&pb.PlanCmd{Create: []*pb.Task{
					task("t1", "web", "w1", 1), task("t2", "web", "w1", 1)}}),
				reports("w1", 300,
					&pb.TaskReport{TaskId: "t2", State: pb.TaskFailed}),
			},
			cmd: reports("w1", 500,
				&pb.TaskReport{TaskId: "t1", State: pb.TaskFailed, ExitCode: 3},
				&pb.TaskReport{TaskId: "t2", State: pb.TaskStopped}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				t1 := s.Task("t1")
				if t1.State != pb.TaskFailed || t1.FinishedAt != 500 ||
					t1.ExitCode != 3 {
					t.Errorf("t1 = %v, want failed at 500, exit 3", t1)
				}
				// failed -> stopped is not a new finish.
				if t2 := s.Task("t2"); t2.FinishedAt != 300 ||
					t2.State != pb.TaskStopped {
					t.Errorf("t2 = %v, want stopped, finished at 300", t2)
				}
			},
		},
		{
			name: "report from the wrong node or for a missing task",
			setup: []cmd{plan(&pb.PlanCmd{
				Create: []*pb.Task{task("t1", "web", "w1", 1)}})},
			cmd: reports("w2", 300,
				&pb.TaskReport{TaskId: "t1", State: pb.TaskFailed},
				&pb.TaskReport{TaskId: "missing", State: pb.TaskRunning}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if t1 := s.Task("t1"); t1.State != pb.TaskPending ||
					t1.ModifyIndex != 1 {
					t.Errorf("t1 = %v, want untouched", t1)
				}
				if s.Task("missing") != nil {
					t.Errorf("a report created task missing")
				}
			},
		},
		{
			name:  "report sets the node's endpoints index",
			setup: []cmd{node("w1")},
			cmd: cmd{TaskReportsType, &pb.TaskReportsCmd{Node: "w1", At: 300,
				EndpointsIndex: 7}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				n := s.Node("w1")
				if n.EndpointsIndex != 7 || n.ModifyIndex != index ||
					n.CreateIndex != 1 {
					t.Errorf("w1 = %v, want endpoints index 7, modify %d",
						n, index)
				}
			},
		},
		{
			name: "report without endpoints index keeps the node's",
			setup: []cmd{node("w1"),
				plan(&pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)}}),
				{TaskReportsType, &pb.TaskReportsCmd{Node: "w1", At: 300,
					EndpointsIndex: 7}},
			},
			cmd: reports("w1", 400, &pb.TaskReport{TaskId: "t1",
				State: pb.TaskRunning}),
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if n := s.Node("w1"); n.EndpointsIndex != 7 || n.ModifyIndex != 3 {
					t.Errorf("w1 = %v, want endpoints index 7, modify 3", n)
				}
				if t1 := s.Task("t1"); t1.State != pb.TaskRunning {
					t.Errorf("t1 = %v, want running", t1)
				}
			},
		},
		{
			name: "endpoints index of an unknown node",
			cmd: cmd{TaskReportsType, &pb.TaskReportsCmd{Node: "w9", At: 300,
				EndpointsIndex: 7}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				if n := s.Node("w9"); n != nil {
					t.Errorf("a report created node %v", n)
				}
			},
		},
		{
			name: "delete tasks",
			setup: []cmd{plan(&pb.PlanCmd{Create: []*pb.Task{
				task("t1", "web", "w1", 1), task("t2", "web", "w1", 1)}})},
			cmd: cmd{DeleteTasksType,
				&pb.DeleteTasksCmd{Ids: []string{"t1", "missing"}}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				ts := s.Tasks()
				if len(ts) != 1 || ts[0].Id != "t2" {
					t.Errorf("tasks = %v, want only t2", ts)
				}
				if got := s.TasksByNode("w1"); len(got) != 1 {
					t.Errorf("tasks on w1 = %d, want 1", len(got))
				}
			},
		},
		{
			name: "set meta",
			setup: []cmd{{SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{
				ClusterId: "old", WorkerToken: "w"}}}},
			cmd: cmd{SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{
				ClusterId: "c1"}}},
			check: func(t *testing.T, s *Snapshot, index uint64) {
				m := s.Meta()
				if m.ClusterId != "c1" || m.WorkerToken != "" {
					t.Errorf("meta = %v, want replaced by cluster c1", m)
				}
			},
		},
		{
			name:    "set meta without meta",
			cmd:     cmd{SetMetaType, &pb.SetMetaCmd{}},
			wantErr: ErrInvalid,
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := testFSM(t)
			applyAll(t, f, tc.setup)
			index := uint64(len(tc.setup) + 1)

			err := apply(t, f, index, tc.cmd)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("apply %s: error %v, want %v", tc.cmd.typ, err, tc.wantErr)
			}

			s := f.State().Snapshot()
			if s.Index() != index {
				t.Errorf("index = %d, want %d", s.Index(), index)
			}
			if tc.check != nil {
				tc.check(t, s, index)
			}
		})
	}
}

func TestApplyBadEntries(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", nil, ErrInvalid},
		{"unknown type", []byte{200, 1, 2}, ErrUnknownCommand},
		{"type zero", []byte{0}, ErrUnknownCommand},
		{"garbage payload", []byte{byte(PlanType), 0xff, 0xff, 0xff}, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := testFSM(t)
			applyAll(t, f, []cmd{node("w1")})
			changed := f.State().Changed()

			res := f.Apply(&raft.Log{Index: 2, Data: tc.data})
			err, _ := res.(error)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("apply: %v, want %v", res, tc.wantErr)
			}
			if got := f.State().Index(); got != 2 {
				t.Errorf("index = %d, want 2: a refused entry is still applied", got)
			}
			if len(f.State().Nodes()) != 1 {
				t.Errorf("nodes changed by a bad entry")
			}
			select {
			case <-changed:
			default:
				t.Errorf("changed channel not closed after apply")
			}
		})
	}
}

func TestChangedAndSnapshotIsolation(t *testing.T) {
	f := testFSM(t)
	applyAll(t, f, []cmd{node("w1")})

	before := f.State().Snapshot()
	changed := f.State().Changed()
	select {
	case <-changed:
		t.Fatal("changed channel closed before any new apply")
	default:
	}

	if err := apply(t, f, 2, node("w2")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("changed channel not closed after apply")
	}
	if f.State().Changed() == changed {
		t.Error("changed channel not replaced after apply")
	}

	if n := len(before.Nodes()); n != 1 || before.Index() != 1 {
		t.Errorf("old view sees %d nodes at index %d, want 1 at 1",
			n, before.Index())
	}
	if n := len(f.State().Nodes()); n != 2 {
		t.Errorf("store has %d nodes, want 2", n)
	}
}

func TestReadsOnEmptyStore(t *testing.T) {
	s := testFSM(t).State()
	if s.Meta() == nil {
		t.Error("Meta() = nil, want empty meta")
	}
	if s.Index() != 0 || s.App("x") != nil || s.LatestDeployment("x") != nil ||
		len(s.Tasks()) != 0 || s.Node("x") != nil {
		t.Error("empty store returned something")
	}
	if SpecOf(nil, 1) != nil {
		t.Error("SpecOf(nil) != nil")
	}
}
