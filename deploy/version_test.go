package deploy

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func fixedID() string { return "d1" }

// appWith returns an app whose versions have the given images; replicas
// are 3 unless the image is repeated, in which case the repeat has 5.
func appWith(version, stable uint64, images ...string) *pb.App {
	a := &pb.App{Name: "web", Version: version, StableVersion: stable}
	seen := map[string]bool{}
	for i, img := range images {
		s := webSpec(img, 3)
		if seen[img] {
			s.Replicas = 5
		}
		seen[img] = true
		a.Versions = append(a.Versions, &pb.AppVersion{Version: uint64(i + 1), Spec: s})
	}
	return a
}

func TestNewVersion(t *testing.T) {
	now := time.Unix(100, 0)
	tests := []struct {
		name        string
		app         *pb.App
		spec        *pb.AppSpec
		changed     bool
		version     uint64
		stable      uint64
		expected    uint64
		deployFrom  uint64 // 0: no deployment
		deployTo    uint64
		wantVersion int // number of versions after
	}{
		{name: "new app", spec: webSpec("a", 3), changed: true, version: 1, stable: 1, wantVersion: 1},
		{name: "identical", app: appWith(1, 1, "a"), spec: webSpec("a", 3)},
		{
			name: "replicas only", app: appWith(1, 1, "a"), spec: webSpec("a", 7),
			changed: true, version: 2, stable: 2, expected: 1, wantVersion: 2,
		},
		{
			name: "replicas only while unstable", app: appWith(2, 1, "a", "b"), spec: webSpec("b", 7),
			changed: true, version: 3, stable: 1, expected: 2, wantVersion: 3,
		},
		{
			name: "image change", app: appWith(1, 1, "a"), spec: webSpec("b", 3),
			changed: true, version: 2, stable: 1, expected: 1, deployFrom: 1, deployTo: 2, wantVersion: 2,
		},
		{
			name: "after rollback numbers past the newest", app: appWith(1, 1, "a", "b"), spec: webSpec("c", 3),
			changed: true, version: 3, stable: 1, expected: 1, deployFrom: 1, deployTo: 3, wantVersion: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd, changed := NewVersion(tc.app, tc.spec, now, fixedID)
			if changed != tc.changed {
				t.Fatalf("changed = %v, want %v", changed, tc.changed)
			}
			if !changed {
				if cmd != nil {
					t.Fatalf("unchanged spec gave a command")
				}
				return
			}
			a := cmd.GetApp()
			if a.GetVersion() != tc.version || a.GetStableVersion() != tc.stable {
				t.Errorf("version %d stable %d, want %d %d", a.GetVersion(), a.GetStableVersion(), tc.version, tc.stable)
			}
			if cmd.GetExpectedVersion() != tc.expected {
				t.Errorf("expected_version %d, want %d", cmd.GetExpectedVersion(), tc.expected)
			}
			if len(a.GetVersions()) != tc.wantVersion {
				t.Errorf("%d versions, want %d", len(a.GetVersions()), tc.wantVersion)
			}
			if !proto.Equal(fsm.SpecOf(a, a.GetVersion()), tc.spec) {
				t.Errorf("current spec is not the deployed spec")
			}
			d := cmd.GetDeployment()
			if tc.deployTo == 0 {
				if d != nil {
					t.Fatalf("unexpected deployment %v", d)
				}
				return
			}
			if d == nil {
				t.Fatal("no deployment")
			}
			if d.GetFromVersion() != tc.deployFrom || d.GetToVersion() != tc.deployTo || d.GetStatus() != pb.DeploymentRunning {
				t.Errorf("deployment %d->%d %s", d.GetFromVersion(), d.GetToVersion(), d.GetStatus())
			}
			if d.GetId() != "d1" || d.GetReplicas() != tc.spec.GetReplicas() || d.GetUpdate().GetBatchSize() != 1 {
				t.Errorf("deployment fields: %v", d)
			}
			if d.GetBatchDeadline() != now.Add(10*time.Second).UnixNano() || d.GetProgressDeadline() != now.Add(30*time.Second).UnixNano() {
				t.Errorf("deadlines %d %d", d.GetBatchDeadline(), d.GetProgressDeadline())
			}
		})
	}
}

func TestRollback(t *testing.T) {
	now := time.Unix(100, 0)
	tests := []struct {
		name    string
		app     *pb.App
		target  uint64
		wantErr error
	}{
		{name: "to stable", app: appWith(3, 1, "a", "b", "c"), target: 1},
		{name: "stable is current: newest older", app: appWith(3, 3, "a", "b", "c"), target: 2},
		{name: "skips replicas-only versions", app: appWith(3, 3, "a", "b", "b"), target: 1},
		{name: "nothing older", app: appWith(1, 1, "a"), wantErr: ErrNoRollbackTarget},
		{name: "no app", wantErr: fsm.ErrAppNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := Rollback(tc.app, now, fixedID)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if cmd.GetApp().GetVersion() != tc.target {
				t.Errorf("version %d, want %d", cmd.GetApp().GetVersion(), tc.target)
			}
			if len(cmd.GetApp().GetVersions()) != len(tc.app.GetVersions()) {
				t.Errorf("rollback added a version")
			}
			if cmd.GetExpectedVersion() != tc.app.GetVersion() {
				t.Errorf("expected_version %d", cmd.GetExpectedVersion())
			}
			d := cmd.GetDeployment()
			if !d.GetManualRollback() || d.GetFromVersion() != tc.app.GetVersion() || d.GetToVersion() != tc.target {
				t.Errorf("deployment %v", d)
			}
		})
	}
}

func TestOfCurrentVersion(t *testing.T) {
	// Version 3 differs from version 2 only in replicas.
	app := appWith(3, 1, "v1", "v2", "v2")
	tests := []struct {
		name string
		task *pb.Task
		want bool
	}{
		{"current number", &pb.Task{Version: 3}, true},
		{"replicas-only predecessor", &pb.Task{Version: 2,
			Spec: fsm.SpecOf(app, 2)}, true},
		{"older tasks", &pb.Task{Version: 1, Spec: fsm.SpecOf(app, 1)}, false},
		{"no spec", &pb.Task{Version: 2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OfCurrentVersion(app, tt.task); got != tt.want {
				t.Errorf("OfCurrentVersion = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNewVersionPrunesHistory checks that an app keeps its newest
// MaxVersionHistory versions plus the stable one and the one a deployment
// starts from, and that Rollback still finds its target.
func TestNewVersionPrunesHistory(t *testing.T) {
	tests := []struct {
		name           string
		version        uint64 // current version of an app with versions 1..30
		stable         uint64
		want           []uint64 // versions kept after deploying version 31
		rollbackTarget uint64
	}{
		{name: "stable kept", version: 30, stable: 1,
			want: append([]uint64{1}, seq(22, 31)...), rollbackTarget: 1},
		// Version 5 is the target of a rollback still running: never
		// stable, so the new deployment starts from 20 and 5 may go.
		{name: "unfinished rollback: the stable version kept", version: 5, stable: 20,
			want: append([]uint64{20}, seq(22, 31)...), rollbackTarget: 20},
		{name: "stable is current", version: 30, stable: 30,
			want: seq(22, 31), rollbackTarget: 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			images := make([]string, 30)
			for i := range images {
				images[i] = fmt.Sprintf("img:%d", i+1)
			}
			app := appWith(tc.version, tc.stable, images...)

			cmd, changed := NewVersion(app, webSpec("img:31", 3), time.Unix(100, 0), fixedID)
			if !changed {
				t.Fatal("new image changed nothing")
			}
			var got []uint64
			for _, av := range cmd.GetApp().GetVersions() {
				got = append(got, av.GetVersion())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("versions %v, want %v", got, tc.want)
			}
			if from := cmd.GetDeployment().GetFromVersion(); fsm.SpecOf(cmd.GetApp(), from) == nil {
				t.Errorf("from version %d of the deployment was pruned", from)
			}

			rb, err := Rollback(cmd.GetApp(), time.Unix(200, 0), fixedID)
			if err != nil {
				t.Fatalf("rollback: %v", err)
			}
			if v := rb.GetApp().GetVersion(); v != tc.rollbackTarget {
				t.Errorf("rollback to %d, want %d", v, tc.rollbackTarget)
			}
		})
	}
}

// seq returns the numbers from a to b inclusive.
func seq(a, b uint64) []uint64 {
	var out []uint64
	for v := a; v <= b; v++ {
		out = append(out, v)
	}
	return out
}

// TestNewVersionStartsFromStable: a deploy that supersedes one still
// running starts from the last stable version, so that its automatic
// rollback returns there and not to the unproven version in between.
func TestNewVersionStartsFromStable(t *testing.T) {
	h := newHarness(t, 2)
	h.steady(webSpec("v1", 2))
	h.deploy(webSpec("v2", 2)) // running, never stable
	cmd := h.deploy(webSpec("v3", 2))
	if d := cmd.GetDeployment(); d.GetFromVersion() != 1 || d.GetToVersion() != 3 {
		t.Fatalf("deployment %d -> %d, want 1 -> 3", d.GetFromVersion(), d.GetToVersion())
	}
}
