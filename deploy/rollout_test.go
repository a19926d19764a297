package deploy

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// rolloutChecks returns a check that fails the test when a step breaks the
// rollout's promises for an app of replicas with batch_size batch:
// never more than replicas+batch tasks to run, never more than batch new
// tasks not yet counted healthy, and never an old task stopped before as
// many new ones counted healthy.
func (h *harness) rolloutChecks(replicas, batch int, newVersion uint64) func() {
	stoppedOld := map[string]bool{}
	return func() {
		h.t.Helper()
		run := h.running("web")
		if len(run) > replicas+batch {
			h.t.Fatalf("%d tasks to run, more than replicas+batch_size %d", len(run), replicas+batch)
		}
		inflight, healthy := 0, 0
		for _, t := range run {
			if t.GetVersion() != newVersion {
				continue
			}
			if t.GetHealthy() && h.clock.Now().Sub(time.Unix(0, t.GetHealthySince())) >= 2*time.Second {
				healthy++
			} else {
				inflight++
			}
		}
		if inflight > batch {
			h.t.Fatalf("%d new tasks in flight, batch_size is %d", inflight, batch)
		}
		for _, t := range h.store().TasksByApp("web") {
			if t.GetVersion() != newVersion && t.GetDesired() == pb.DesiredStop {
				stoppedOld[t.GetId()] = true
			}
		}
		if len(stoppedOld) > healthy {
			h.t.Fatalf("%d old tasks stopped with only %d new ones healthy for min_healthy_time", len(stoppedOld), healthy)
		}
	}
}

func (h *harness) assertPlacedOnce() {
	h.t.Helper()
	for id, n := range h.prop.created {
		if n > 1 {
			h.t.Errorf("task %s placed %d times", id, n)
		}
	}
}

func TestRolloutBatches(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 4))
	h.deploy(webSpec("v2", 4))

	h.run(time.Second, 60, h.rolloutChecks(4, 1, 2), h.deploymentStatus("web", pb.DeploymentSuccessful))

	app := h.store().App("web")
	if app.GetVersion() != 2 || app.GetStableVersion() != 2 {
		t.Errorf("app version %d stable %d, want 2 2", app.GetVersion(), app.GetStableVersion())
	}
	if got := versionsOf(h.running("web")); got[2] != 4 || len(got) != 1 {
		t.Errorf("running versions %v, want 4 of version 2", got)
	}
	d := h.store().LatestDeployment("web")
	if d.GetPlaced() != 4 || d.GetFailures() != 0 {
		t.Errorf("deployment placed %d failures %d, want 4 0", d.GetPlaced(), d.GetFailures())
	}
	h.assertPlacedOnce()

	// Once the old tasks report stopped, they are collected.
	h.work()
	h.step()
	if n := len(h.store().TasksByApp("web")); n != 4 {
		t.Errorf("%d tasks left after collection, want 4", n)
	}
}

func TestRolloutBatchSizes(t *testing.T) {
	tests := []struct {
		replicas, batch int32
		workers         int
	}{
		{replicas: 1, batch: 1, workers: 1},
		{replicas: 3, batch: 2, workers: 2},
		{replicas: 5, batch: 5, workers: 3},
		{replicas: 2, batch: 3, workers: 3},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("replicas %d batch %d", tc.replicas, tc.batch), func(t *testing.T) {
			h := newHarness(t, tc.workers)
			h.steady(webSpec("v1", tc.replicas))
			spec := webSpec("v2", tc.replicas)
			spec.Update.BatchSize = tc.batch
			h.deploy(spec)
			h.run(time.Second, 60, h.rolloutChecks(int(tc.replicas), int(tc.batch), 2),
				h.deploymentStatus("web", pb.DeploymentSuccessful))
			if got := versionsOf(h.running("web")); got[2] != int(tc.replicas) || len(got) != 1 {
				t.Errorf("running versions %v, want %d of version 2", got, tc.replicas)
			}
			h.assertPlacedOnce()
		})
	}
}

func TestRolloutBrokenVersionRollsBack(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 4))
	h.healthy = func(t *pb.Task) bool { return t.GetSpec().GetImage() != "v2" }
	start := h.clock.Now()
	h.deploy(webSpec("v2", 4))

	var failedAt time.Time
	h.run(time.Second, 60, func() {
		d := h.store().LatestDeployment("web")
		if d.GetRollingBack() && failedAt.IsZero() {
			failedAt = h.clock.Now()
		}
	}, h.deploymentStatus("web", pb.DeploymentRolledBack))

	if took := failedAt.Sub(start); took < 10*time.Second || took > 12*time.Second {
		t.Errorf("rollback began %s after the deploy, want at the 10s healthy_deadline", took)
	}
	d := h.store().LatestDeployment("web")
	const want = "rolled back to version 1 after: batch not healthy within 10s"
	if d.GetDescription() != want {
		t.Errorf("description %q, want %q", d.GetDescription(), want)
	}
	if d.GetRollbackReason() != "batch not healthy within 10s" {
		t.Errorf("rollback_reason %q, want the failure", d.GetRollbackReason())
	}
	app := h.store().App("web")
	if app.GetVersion() != 1 || app.GetStableVersion() != 1 {
		t.Errorf("app version %d stable %d, want 1 1", app.GetVersion(), app.GetStableVersion())
	}
	if got := versionsOf(h.running("web")); got[1] != 4 || len(got) != 1 {
		t.Errorf("running versions %v, want 4 of version 1", got)
	}
	h.assertPlacedOnce()
}

func TestRolloutWithoutAutoRollbackFails(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 4))
	h.healthy = func(t *pb.Task) bool { return t.GetSpec().GetImage() != "v2" }
	spec := webSpec("v2", 4)
	spec.Update.AutoRollback = proto.Bool(false)
	h.deploy(spec)

	h.run(time.Second, 60, nil, h.deploymentStatus("web", pb.DeploymentFailed))
	d := h.store().LatestDeployment("web")
	if !strings.Contains(d.GetDescription(), "batch not healthy") {
		t.Errorf("description %q", d.GetDescription())
	}

	// The app holds: the old tasks keep running, nothing is restarted.
	for i := 0; i < 5; i++ {
		h.work()
		h.clock.Advance(time.Second)
		h.step()
	}
	app := h.store().App("web")
	if app.GetVersion() != 2 || app.GetStableVersion() != 1 {
		t.Errorf("app version %d stable %d, want 2 1", app.GetVersion(), app.GetStableVersion())
	}
	if got := versionsOf(h.running("web")); got[1] != 4 {
		t.Errorf("running versions %v, want the 4 tasks of version 1 kept", got)
	}
}

func TestRolloutHealthyThenFailingRollsBack(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 4))
	h.healthy = func(t *pb.Task) bool {
		if t.GetSpec().GetImage() != "v2" {
			return true
		}
		// Healthy for 3s, then never again.
		return !t.GetEverHealthy() || h.clock.Now().Sub(time.Unix(0, t.GetHealthySince())) < 3*time.Second
	}
	h.deploy(webSpec("v2", 4))

	h.run(time.Second, 60, nil, h.deploymentStatus("web", pb.DeploymentRolledBack))
	d := h.store().LatestDeployment("web")
	if d.GetFailures() < 1 || !d.GetRollingBack() {
		t.Errorf("failures %d rolling_back %v", d.GetFailures(), d.GetRollingBack())
	}
	const prefix = "rolled back to version 1 after: task "
	if !strings.HasPrefix(d.GetDescription(), prefix) ||
		!strings.Contains(d.GetDescription(), "turned unhealthy") {
		t.Errorf("description %q, want %q... naming the unhealthy task",
			d.GetDescription(), prefix)
	}
	if got := versionsOf(h.running("web")); got[1] != 4 || len(got) != 1 {
		t.Errorf("running versions %v, want 4 of version 1", got)
	}
	h.assertPlacedOnce()
}

// outcome is what a rollout ends with, to compare runs.
type outcome struct {
	status       string
	version      uint64
	stable       uint64
	runningByVer string
	description  string
}

func (h *harness) outcome() outcome {
	d := h.store().LatestDeployment("web")
	app := h.store().App("web")
	return outcome{
		status:       d.GetStatus(),
		version:      app.GetVersion(),
		stable:       app.GetStableVersion(),
		runningByVer: fmt.Sprint(versionsOf(h.running("web"))),
		description:  d.GetDescription(),
	}
}

// TestRolloutLeaderChangeEveryStep runs rollouts with a new engine for
// every step, optionally losing proposals, and expects the same end as an
// undisturbed run.
func TestRolloutLeaderChangeEveryStep(t *testing.T) {
	variants := leaderVariants()
	rollouts := []struct {
		name   string
		broken bool
		want   string
	}{
		{name: "good", want: pb.DeploymentSuccessful},
		{name: "broken", broken: true, want: pb.DeploymentRolledBack},
	}
	for _, r := range rollouts {
		var base *outcome
		for _, v := range variants {
			t.Run(r.name+"/"+v.name, func(t *testing.T) {
				h := newHarness(t, 3)
				h.steady(webSpec("v1", 4))
				if r.broken {
					h.healthy = func(t *pb.Task) bool { return t.GetSpec().GetImage() != "v2" }
				}
				h.disturb(v)
				h.deploy(webSpec("v2", 4))

				check := func() {
					if n := len(h.running("web")); n > 5 {
						t.Fatalf("%d tasks to run, more than replicas+batch_size", n)
					}
				}
				if !r.broken {
					check = h.rolloutChecks(4, 1, 2)
				}
				h.run(time.Second, 80, check, h.deploymentStatus("web", r.want))
				h.assertPlacedOnce()

				got := h.outcome()
				if base == nil {
					base = &got
				} else if got != *base {
					t.Errorf("outcome %+v, want %+v as without leader changes", got, *base)
				}

				// No task of the new version was ever restarted.
				if !r.broken {
					for _, tk := range h.store().TasksByApp("web") {
						if tk.GetVersion() == 2 && tk.GetDesired() != pb.DesiredRun {
							t.Errorf("task %s of version 2 was stopped: %s", tk.GetId(), tk.GetMessage())
						}
					}
				}
			})
		}
	}
}

func TestRolloutReplacesLostTasks(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 4))
	h.clock.Advance(10 * time.Second) // the engine has long been enabled
	h.deploy(webSpec("v2", 4))

	killed := false
	h.run(time.Second, 80, func() {
		if killed {
			return
		}
		for _, tk := range h.running("web") {
			if tk.GetVersion() == 2 && tk.GetState() == pb.TaskRunning {
				h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: tk.GetNode()}, false, h.clock.Now())
				killed = true
				return
			}
		}
	}, h.deploymentStatus("web", pb.DeploymentSuccessful))

	down := 0
	for _, n := range h.store().Nodes() {
		if n.GetStatus() == pb.NodeDown {
			down++
		}
	}
	if !killed || down != 1 {
		t.Fatalf("killed %v, %d nodes down: the test did not lose a worker", killed, down)
	}
	d := h.store().LatestDeployment("web")
	if d.GetFailures() != 0 || d.GetRollingBack() {
		t.Errorf("failures %d rolling_back %v: lost tasks counted as failures", d.GetFailures(), d.GetRollingBack())
	}
	if got := versionsOf(h.running("web")); got[2] != 4 || len(got) != 1 {
		t.Errorf("running versions %v, want 4 of version 2", got)
	}
	for _, tk := range h.running("web") {
		if h.store().Node(tk.GetNode()).GetStatus() != pb.NodeReady {
			t.Errorf("task %s runs on %s node %s", tk.GetId(), h.store().Node(tk.GetNode()).GetStatus(), tk.GetNode())
		}
	}
}

func TestManualRollback(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 3))
	h.deploy(webSpec("v2", 3))
	h.run(time.Second, 60, nil, h.deploymentStatus("web", pb.DeploymentSuccessful))

	cmd, err := Rollback(h.store().App("web"), h.clock.Now(), NewID)
	if err != nil {
		t.Fatal(err)
	}
	h.apply(fsm.DeployAppType, cmd)
	h.run(time.Second, 60, h.rolloutChecks(3, 1, 1), h.deploymentStatus("web", pb.DeploymentSuccessful))

	app := h.store().App("web")
	if app.GetVersion() != 1 || app.GetStableVersion() != 1 || len(app.GetVersions()) != 2 {
		t.Errorf("app version %d stable %d versions %d, want 1 1 2", app.GetVersion(), app.GetStableVersion(), len(app.GetVersions()))
	}
	if got := versionsOf(h.running("web")); got[1] != 3 || len(got) != 1 {
		t.Errorf("running versions %v, want 3 of version 1", got)
	}
}

// TestRolloutProperties runs random rollouts with random leader changes
// and lost proposals: each ends as its version deserves, never places a
// task twice and never runs more than replicas+batch_size tasks.
func TestRolloutProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for iter := 0; iter < 40; iter++ {
		replicas := int32(1 + rng.Intn(6))
		batch := int32(1 + rng.Intn(3))
		workers := 1 + rng.Intn(4)
		broken := rng.Intn(3) == 0
		lossRate := rng.Intn(4) // 0: none, else 1 in lossRate+1
		name := fmt.Sprintf("%d: replicas %d batch %d workers %d broken %v loss %d",
			iter, replicas, batch, workers, broken, lossRate)
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, workers)
			h.steady(webSpec("v1", replicas))
			if broken {
				h.healthy = func(t *pb.Task) bool { return t.GetSpec().GetImage() != "v2" }
			}
			h.freshEngine = rng.Intn(2) == 0
			if lossRate > 0 {
				h.prop.lose = func(int, fsm.CommandType) (bool, bool) {
					if rng.Intn(lossRate+1) != 0 {
						return false, false
					}
					after := rng.Intn(2) == 0
					return !after, after
				}
			}
			spec := webSpec("v2", replicas)
			spec.Update.BatchSize = batch
			h.deploy(spec)

			want, version := pb.DeploymentSuccessful, uint64(2)
			if broken {
				want, version = pb.DeploymentRolledBack, 1
			}
			h.run(time.Second, 200, func() {
				if n := len(h.running("web")); n > int(replicas+batch) {
					t.Fatalf("%d tasks to run, more than replicas+batch_size", n)
				}
			}, h.deploymentStatus("web", want))
			h.assertPlacedOnce()
			if got := versionsOf(h.running("web")); got[version] != int(replicas) || len(got) != 1 {
				t.Errorf("running versions %v, want %d of version %d", got, replicas, version)
			}
		})
	}
}

func TestRolloutFailsAtProgressDeadline(t *testing.T) {
	h := newHarness(t, 2)
	h.steady(webSpec("v1", 2))

	// No worker can take a new task, so the rollout cannot move: only
	// the progress deadline can end it.
	for _, w := range []string{"w1", "w2"} {
		h.apply(fsm.NodeStatusType, &pb.NodeStatusCmd{Name: w, Status: pb.NodeDraining,
			At: h.clock.Now().UnixNano()})
	}
	spec := webSpec("v2", 2)
	spec.Update.AutoRollback = proto.Bool(false)
	h.deploy(spec)
	start := h.clock.Now()

	h.run(time.Second, 60, nil, h.deploymentStatus("web", pb.DeploymentFailed))
	d := h.store().LatestDeployment("web")
	if !strings.Contains(d.GetDescription(), "no progress within 30s") {
		t.Errorf("description %q, want the progress deadline named", d.GetDescription())
	}
	if waited := h.clock.Now().Sub(start); waited < 30*time.Second || waited > 32*time.Second {
		t.Errorf("failed after %s, want just past the 30s progress deadline", waited)
	}
	if got := versionsOf(h.running("web")); got[1] != 2 || got[2] != 0 {
		t.Errorf("running versions %v, want the 2 tasks of version 1 kept", got)
	}
}
