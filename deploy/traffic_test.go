package deploy

import (
	"fmt"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

const rotationWarning = "task taken out of rotation without every worker's confirmation"

// stopOne scales web from 3 to 2 replicas and steps until a task is asked
// to stop; it returns that task.
func (h *harness) stopOne() *pb.Task {
	h.t.Helper()
	h.apply(fsm.ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: 2, At: h.clock.Now().UnixNano()})
	var victim *pb.Task
	h.run(time.Second, 5, nil, func() error {
		for _, t := range h.store().TasksByApp("web") {
			if t.GetDesired() == pb.DesiredStop {
				victim = t
				return nil
			}
		}
		return fmt.Errorf("no task of web asked to stop")
	})
	return victim
}

// TestRotation stops a task while one worker, not the task's own, confirms
// no endpoint set, and checks when the task leaves the rotation.
func TestRotation(t *testing.T) {
	tests := []struct {
		name string
		// dead: the lagging worker is dead in gossip.
		dead bool
		// ackAfter: the lagging worker confirms after this long; 0 never.
		ackAfter time.Duration
		// bounded: the task leaves by the bound, with a warning.
		bounded bool
	}{
		{name: "waits for an alive worker", ackAfter: 3 * time.Second},
		{name: "a dead worker does not hold it", dead: true},
		{name: "the bound passes", bounded: true},
	}
	for _, tc := range tests {
		var base string
		for _, v := range leaderVariants() {
			t.Run(tc.name+"/"+v.name, func(t *testing.T) {
				h := newHarness(t, 3)
				h.agentStops = true
				h.steady(webSpec("v1", 3))
				h.disturb(v)

				victim := h.stopOne()
				lagger := "w1"
				if victim.GetNode() == lagger {
					lagger = "w2"
				}
				h.lagging[lagger] = true
				if tc.dead {
					h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: lagger}, false, h.clock.Now())
				}
				stopAt := time.Unix(0, victim.GetStopRequestedAt())

				// While the lagger is alive and has not confirmed, the task
				// stays in rotation and keeps running.
				for !tc.dead && (tc.bounded || h.clock.Now().Sub(stopAt) < tc.ackAfter) &&
					h.clock.Now().Sub(stopAt) <= DefaultConfig().RotationBound {
					h.step()
					tk := h.store().Task(victim.GetId())
					if tk.GetOutOfRotation() {
						t.Fatalf("task out of rotation %s after its stop, while %s has not confirmed",
							h.clock.Now().Sub(stopAt), lagger)
					}
					h.work()
					if s := h.store().Task(victim.GetId()).GetState(); s != pb.TaskDraining {
						t.Fatalf("task %s before it is out of rotation, want draining", s)
					}
					h.clock.Advance(time.Second)
				}
				if !tc.bounded {
					h.lagging[lagger] = false
				}

				var out *pb.Task
				h.run(time.Second, 10, nil, func() error {
					tk := h.store().Task(victim.GetId())
					if !tk.GetOutOfRotation() {
						return fmt.Errorf("task %s still in rotation", victim.GetId())
					}
					out = tk
					return nil
				})
				waited := time.Duration(out.GetOutOfRotationAt() - out.GetStopRequestedAt())
				warnings := h.logs.lines(rotationWarning, "task_id="+victim.GetId())
				if tc.bounded {
					if waited <= 5*time.Second {
						t.Errorf("out of rotation %s after the stop, want after the 5s bound", waited)
					}
					if len(warnings) == 0 {
						t.Fatalf("no warning %q for task %s", rotationWarning, victim.GetId())
					}
					if len(h.logs.lines(rotationWarning, "task_id="+victim.GetId(), "workers="+lagger)) == 0 {
						t.Errorf("warning %q does not name %s", warnings[0], lagger)
					}
					if !v.fresh && len(warnings) != 1 {
						t.Errorf("%d warnings for task %s, want 1", len(warnings), victim.GetId())
					}
				} else {
					if waited > 5*time.Second {
						t.Errorf("out of rotation %s after the stop, want before the 5s bound", waited)
					}
					if len(warnings) != 0 {
						t.Errorf("warned %q although every live worker confirmed", warnings[0])
					}
				}

				// Out of rotation, the task stops and is collected; the app
				// keeps its replicas.
				h.run(time.Second, 10, nil, func() error {
					if h.store().Task(victim.GetId()) != nil {
						return fmt.Errorf("task %s not yet collected", victim.GetId())
					}
					return h.healthyCount("web")
				})
				h.assertPlacedOnce()

				got := fmt.Sprintf("stopped task on %s, lagger %s, bounded %v",
					victim.GetNode(), lagger, waited > 5*time.Second)
				if base == "" {
					base = got
				} else if got != base {
					t.Errorf("outcome %q, want %q as without leader changes", got, base)
				}
			})
		}
	}
}

// TestRotationOfRemovedApp takes the tasks of a removed app out of
// rotation once every worker confirms.
func TestRotationOfRemovedApp(t *testing.T) {
	h := newHarness(t, 2)
	h.agentStops = true
	h.steady(webSpec("v1", 2))
	h.apply(fsm.RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: h.clock.Now().UnixNano()})
	h.run(time.Second, 10, nil, func() error {
		for _, tk := range h.store().TasksByApp("web") {
			if time.Duration(tk.GetOutOfRotationAt()-tk.GetStopRequestedAt()) > 5*time.Second {
				t.Fatalf("task %s left the rotation by the bound", tk.GetId())
			}
		}
		if n := len(h.store().TasksByApp("web")); n != 0 {
			return fmt.Errorf("%d tasks of the removed app left", n)
		}
		return nil
	})
	if w := h.logs.lines(rotationWarning); len(w) != 0 {
		t.Errorf("warned %q although every worker confirmed", w[0])
	}
}

// drainChecks returns a check that fails the test when, after a step,
// fewer than replicas tasks of web to run have been healthy for the 2s
// min_healthy_time, more than replicas+batch are to run, or a task placed
// after index runs on node.
func (h *harness) drainChecks(node string, replicas, batch int, index uint64) func() {
	return func() {
		h.t.Helper()
		if n := len(h.running("web")); n > replicas+batch {
			h.t.Fatalf("%d tasks of web to run, more than replicas+batch_size %d", n, replicas+batch)
		}
		healthy := 0
		for _, tk := range h.running("web") {
			since := time.Unix(0, tk.GetHealthySince())
			if tk.GetHealthy() && h.clock.Now().Sub(since) >= 2*time.Second {
				healthy++
			}
		}
		if healthy < replicas {
			h.t.Fatalf("%d tasks of web to run healthy for min_healthy_time, want at least %d",
				healthy, replicas)
		}
		for _, tk := range h.store().TasksByNode(node) {
			if tk.GetCreateIndex() > index {
				h.t.Fatalf("task %s placed on draining %s", tk.GetId(), node)
			}
		}
	}
}

// TestNodeDrain drains the worker that holds half of the 4 tasks of web,
// with and without a rollout going on, then activates it again.
func TestNodeDrain(t *testing.T) {
	tests := []struct {
		name    string
		batch   int32
		rollout bool
	}{
		{name: "steady app", batch: 1},
		{name: "steady app batch 2", batch: 2},
		{name: "during a rollout", batch: 1, rollout: true},
	}
	for _, tc := range tests {
		var base string
		for _, v := range leaderVariants() {
			t.Run(tc.name+"/"+v.name, func(t *testing.T) {
				h := newHarness(t, 3)
				h.agentStops = true
				spec := webSpec("v1", 4)
				spec.Update.BatchSize = tc.batch
				h.steady(spec)
				h.clock.Advance(2 * time.Second) // every task counts healthy
				perNode := map[string]int{}
				for _, tk := range h.running("web") {
					perNode[tk.GetNode()]++
				}
				node := ""
				for n, c := range perNode {
					if c == 2 {
						node = n
					}
				}
				if node == "" {
					t.Fatalf("tasks per node %v: none holds 2 of 4", perNode)
				}

				h.disturb(v)
				if tc.rollout {
					spec := webSpec("v2", 4)
					spec.Update.BatchSize = tc.batch
					h.deploy(spec)
					h.step()
				}
				h.apply(fsm.NodeStatusType, &pb.NodeStatusCmd{Name: node,
					Status: pb.NodeDraining, At: h.clock.Now().UnixNano()})
				index := h.store().Index()

				check := h.drainChecks(node, 4, int(tc.batch), index)
				h.run(time.Second, 120, check, func() error {
					if tc.rollout {
						if err := h.deploymentStatus("web", pb.DeploymentSuccessful)(); err != nil {
							return err
						}
					}
					for _, tk := range h.running("web") {
						if tk.GetNode() == node {
							return fmt.Errorf("task %s still to run on %s", tk.GetId(), node)
						}
					}
					return h.healthyCount("web")
				})
				h.assertPlacedOnce()
				if tc.rollout {
					if got := versionsOf(h.running("web")); got[2] != 4 || len(got) != 1 {
						t.Errorf("running versions %v, want 4 of version 2", got)
					}
				}

				// Activate: eligible again, nothing moves back.
				before := map[string]bool{}
				for _, tk := range h.running("web") {
					before[tk.GetId()] = true
				}
				h.apply(fsm.NodeStatusType, &pb.NodeStatusCmd{Name: node,
					Status: pb.NodeReady, At: h.clock.Now().UnixNano()})
				for i := 0; i < 10; i++ {
					h.step()
					h.work()
					h.clock.Advance(time.Second)
				}
				run := h.running("web")
				for _, tk := range run {
					if !before[tk.GetId()] {
						t.Errorf("task %s placed on %s after the activate", tk.GetId(), tk.GetNode())
					}
				}
				if len(run) != len(before) {
					t.Errorf("%d tasks to run after the activate, want the %d before", len(run), len(before))
				}

				perNode = map[string]int{}
				for _, tk := range run {
					perNode[tk.GetNode()]++
				}
				got := fmt.Sprint(perNode)
				if base == "" {
					base = got
				} else if got != base {
					t.Errorf("tasks per node %s, want %s as without leader changes", got, base)
				}
			})
		}
	}
}
