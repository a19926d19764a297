package deploy

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func (h *harness) healthyCount(app string) error {
	n := 0
	want := int(fsm.SpecOf(h.store().App(app), h.store().App(app).GetVersion()).GetReplicas())
	run := h.running(app)
	for _, t := range run {
		if t.GetHealthy() {
			n++
		}
	}
	if n != want || len(run) != want {
		return fmt.Errorf("%d tasks to run, %d healthy, want %d", len(run), n, want)
	}
	return nil
}

func TestReconcileScale(t *testing.T) {
	tests := []struct {
		name     string
		replicas int32
	}{
		{name: "up", replicas: 6},
		{name: "down", replicas: 1},
		{name: "to zero", replicas: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 3)
			h.steady(webSpec("v1", 3))
			before := h.running("web")

			h.apply(fsm.ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: tc.replicas, At: h.clock.Now().UnixNano()})
			h.run(time.Second, 10, nil, func() error { return h.healthyCount("web") })

			perNode := map[string]int{}
			ports := map[string]bool{}
			for _, tk := range h.running("web") {
				perNode[tk.GetNode()]++
				key := fmt.Sprintf("%s:%d", tk.GetNode(), tk.GetPorts()["http"])
				if ports[key] {
					t.Errorf("port %s used twice", key)
				}
				ports[key] = true
			}
			for node, n := range perNode {
				if n > (int(tc.replicas)+2)/3 {
					t.Errorf("node %s runs %d tasks of %d replicas over 3 nodes", node, n, tc.replicas)
				}
			}
			if tc.replicas < 3 {
				// The oldest tasks stay.
				for i, tk := range h.running("web") {
					if tk.GetId() != before[i].GetId() {
						t.Errorf("kept %s, want the oldest %s", tk.GetId(), before[i].GetId())
					}
				}
			}
		})
	}
}

// TestReconcilePlacesBoundedPerStep checks that a huge replica count (one
// the fsm accepts, though the API refuses it) is placed a bounded number
// per step instead of all at once: a leader once died of OOM trying.
func TestReconcilePlacesBoundedPerStep(t *testing.T) {
	tests := []struct {
		name     string
		replicas int32
	}{
		{name: "three steps worth", replicas: 3 * maxPlacePerStep},
		{name: "max int32", replicas: math.MaxInt32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 2)
			spec := webSpec("v1", 1)
			spec.Ports = nil // no host ports: nothing else limits placement
			h.steady(spec)

			h.apply(fsm.ScaleAppType, &pb.ScaleAppCmd{Name: "web",
				Replicas: tc.replicas, At: h.clock.Now().UnixNano()})
			h.step()

			got := len(h.store().TasksByApp("web"))
			if want := 1 + maxPlacePerStep; got != want {
				t.Fatalf("%d tasks after one step, want %d", got, want)
			}
		})
	}
}

func TestReconcileReplicasOnlyVersionRestartsNothing(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 3))
	h.deploy(webSpec("v1", 5))
	h.run(time.Second, 10, nil, func() error { return h.healthyCount("web") })
	if got := versionsOf(h.running("web")); got[1] != 3 || got[2] != 2 {
		t.Errorf("running versions %v, want the 3 tasks of version 1 kept and 2 added", got)
	}
	if app := h.store().App("web"); app.GetStableVersion() != 2 {
		t.Errorf("stable version %d, want 2", app.GetStableVersion())
	}
}

func TestReconcileReplacesFailedTaskAfterDelay(t *testing.T) {
	h := newHarness(t, 3)
	h.steady(webSpec("v1", 3))
	victim := h.running("web")[0].GetId()
	crashed := false
	h.crash = func(t *pb.Task) bool {
		if t.GetId() == victim && !crashed {
			crashed = true
			return true
		}
		return false
	}
	h.work()
	failedAt := h.clock.Now()
	if s := h.store().Task(victim).GetState(); s != pb.TaskFailed {
		t.Fatalf("victim is %s, want failed", s)
	}

	for h.clock.Now().Sub(failedAt) < RestartDelay {
		h.step()
		if n := len(h.store().TasksByApp("web")); n != 3 {
			t.Fatalf("%s after the crash: %d tasks, want no replacement before %s", h.clock.Now().Sub(failedAt), n, RestartDelay)
		}
		h.clock.Advance(500 * time.Millisecond)
	}
	h.run(time.Second, 5, nil, func() error { return h.healthyCount("web") })
	// The worker's reason stays: the stop reason must not hide it.
	if tk := h.store().Task(victim); tk.GetDesired() != pb.DesiredStop || tk.GetMessage() != "crashed" {
		t.Errorf("victim desired %s message %q, want stop, %q", tk.GetDesired(), tk.GetMessage(), "crashed")
	}
}

func TestReconcileKeepsThreeFailedTasks(t *testing.T) {
	h := newHarness(t, 1)
	h.steady(webSpec("v1", 1))
	h.crash = func(*pb.Task) bool { return true }
	h.run(time.Second, 40, nil, func() error {
		failed := 0
		for _, tk := range h.store().TasksByApp("web") {
			if tk.GetDesired() == pb.DesiredStop && tk.GetState() == pb.TaskFailed {
				failed++
			}
		}
		if failed > KeepFailed {
			t.Fatalf("%d failed tasks kept, want at most %d", failed, KeepFailed)
		}
		if h.ids < 8 {
			return fmt.Errorf("only %d ids handed out, want a few crash cycles", h.ids)
		}
		return nil
	})
}

func TestWorkerDown(t *testing.T) {
	tests := []struct {
		name string
		// fresh builds a new engine (a new leader) when the worker dies,
		// and says the worker has been dead for long already.
		fresh bool
		// draining drains the worker just before it dies.
		draining bool
	}{
		{name: "worker dies"},
		{name: "new leader sees a long dead worker", fresh: true},
		{name: "draining worker dies", draining: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 3)
			h.steady(webSpec("v1", 3))
			h.clock.Advance(10 * time.Second) // the engine has long been enabled

			status := pb.NodeReady
			if tc.draining {
				status = pb.NodeDraining
				h.apply(fsm.NodeStatusType, &pb.NodeStatusCmd{Name: "w1", Status: status,
					At: h.clock.Now().UnixNano()})
			}
			diedAt := h.clock.Now()
			since := diedAt
			if tc.fresh {
				since = diedAt.Add(-time.Minute)
				h.eng = h.newEngine()
			}
			h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: "w1"}, false, since)
			var lost string
			for _, tk := range h.running("web") {
				if tk.GetNode() == "w1" {
					lost = tk.GetId()
				}
			}

			for h.clock.Now().Sub(diedAt) <= 5*time.Second {
				h.step()
				if s := h.store().Node("w1").GetStatus(); s != status {
					t.Fatalf("w1 is %s %s after dying, before the 5s grace", s, h.clock.Now().Sub(diedAt))
				}
				if !tc.draining && h.store().Task(lost).GetDesired() != pb.DesiredRun {
					t.Fatalf("task on w1 stopped before the grace")
				}
				h.work()
				h.clock.Advance(time.Second)
			}
			h.run(time.Second, 5, nil, func() error {
				if s := h.store().Node("w1").GetStatus(); s != pb.NodeDown {
					return fmt.Errorf("w1 is %s, want down", s)
				}
				for _, tk := range h.running("web") {
					if tk.GetNode() == "w1" {
						return fmt.Errorf("task %s still runs on w1", tk.GetId())
					}
				}
				return h.healthyCount("web")
			})

			// The lost task is collected once w1 has been down for the grace.
			h.run(time.Second, 10, nil, func() error {
				if h.store().Task(lost) != nil {
					return fmt.Errorf("lost task %s not yet collected", lost)
				}
				return nil
			})

			// Back alive: ready again.
			h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: "w1"}, true, h.clock.Now())
			h.step()
			if s := h.store().Node("w1").GetStatus(); s != pb.NodeReady {
				t.Errorf("w1 is %s after coming back, want ready", s)
			}
		})
	}
}

// The leader records its --bootstrap-expect as the cluster's min_voters
// with the tokens, and a later leader only ever raises it: one added
// with --join alone (0) keeps the cluster's floor.
func TestMinVotersRecorded(t *testing.T) {
	h := newHarness(t, 0)
	minVoters := func(n int) func(*Config) { return func(c *Config) { c.MinVoters = n } }

	h.eng = h.newEngine(minVoters(3))
	h.step()
	first := h.store().Meta()
	if first.GetMinVoters() != 3 || first.GetWorkerToken() == "" {
		t.Fatalf("meta %v, want tokens and min_voters 3", first)
	}

	index := h.store().Index()
	h.eng = h.newEngine(minVoters(0))
	h.step()
	if got := h.store().Meta().GetMinVoters(); got != 3 || h.store().Index() != index {
		t.Errorf("leader without bootstrap-expect: min_voters %d (index %d -> %d), want 3 unchanged",
			got, index, h.store().Index())
	}

	h.eng = h.newEngine(minVoters(5))
	h.step()
	got := h.store().Meta()
	if got.GetMinVoters() != 5 {
		t.Errorf("leader with bootstrap-expect 5: min_voters %d, want 5", got.GetMinVoters())
	}
	if got.GetWorkerToken() != first.GetWorkerToken() || got.GetClusterId() != first.GetClusterId() {
		t.Errorf("raising min_voters changed the tokens or cluster ID: %v, was %v", got, first)
	}
}

func TestMetaAndManagers(t *testing.T) {
	h := newHarness(t, 0)
	m1 := gossip.Meta{Role: pb.RoleManager, Name: "m1", Address: "10.0.1.1",
		RPCPort: 7071, HTTPPort: 7070, RaftPort: 7072}
	m2 := gossip.Meta{Role: pb.RoleManager, Name: "m2", Address: "10.0.1.2", RPCPort: 7071}
	h.live.set(m1, true, h.clock.Now())
	h.live.setAddr("m1", "10.0.1.1:7074")
	h.live.set(m2, false, h.clock.Now())

	h.step()
	meta := h.store().Meta()
	if !strings.HasPrefix(meta.GetWorkerToken(), "HMW-") ||
		!strings.HasPrefix(meta.GetManagerToken(), "HMM-") || meta.GetClusterId() == "" {
		t.Fatalf("meta %v", meta)
	}
	n := h.store().Node("m1")
	if n.GetRole() != pb.RoleManager || n.GetStatus() != pb.NodeReady ||
		n.GetRaftPort() != 7072 || n.GetAddress() != "10.0.1.1" ||
		n.GetGossipPort() != 7074 {
		t.Errorf("m1 %v, want raft port 7072 and gossip port 7074 at 10.0.1.1", n)
	}
	if h.store().Node("m2") != nil {
		t.Errorf("dead manager m2 recorded")
	}

	index := h.store().Index()
	h.eng = h.newEngine()
	h.step()
	if h.store().Index() != index {
		t.Errorf("a second step changed the store (index %d -> %d)", index, h.store().Index())
	}
	if got := h.store().Meta(); got.GetWorkerToken() != meta.GetWorkerToken() {
		t.Errorf("tokens created twice")
	}

	m1.Address = "10.0.1.9"
	h.live.set(m1, true, h.clock.Now())
	h.step()
	if a := h.store().Node("m1").GetAddress(); a != "10.0.1.9" {
		t.Errorf("m1 address %s after it moved", a)
	}
	if p := h.store().Node("m1").GetGossipPort(); p != 7074 {
		t.Errorf("m1 gossip port %d after it moved, want 7074 kept", p)
	}

	h.live.setAddr("m1", "10.0.1.9:7075")
	h.step()
	if p := h.store().Node("m1").GetGossipPort(); p != 7075 {
		t.Errorf("m1 gossip port %d, want 7075 from its gossip address", p)
	}
}

func TestRemovedAppCollected(t *testing.T) {
	h := newHarness(t, 2)
	h.steady(webSpec("v1", 2))
	h.apply(fsm.RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: h.clock.Now().UnixNano()})
	h.run(time.Second, 5, nil, func() error {
		if n := len(h.store().TasksByApp("web")); n != 0 {
			return fmt.Errorf("%d tasks of the removed app left", n)
		}
		return nil
	})
}

func TestEnabledLoop(t *testing.T) {
	h := newHarness(t, 2)
	h.eng.cfg.Interval = 5 * time.Millisecond
	h.eng.SetEnabled(true)
	h.eng.SetEnabled(true) // a no-op while running

	cmd, _ := NewVersion(nil, webSpec("v1", 2), h.clock.Now(), NewID)
	h.apply(fsm.DeployAppType, cmd)
	waitFor(t, h.store(), func() error {
		if n := len(h.store().TasksByApp("web")); n != 2 {
			return fmt.Errorf("enabled engine placed %d tasks, want 2", n)
		}
		return nil
	})

	h.eng.SetEnabled(false)
	h.eng.SetEnabled(false) // a no-op while stopped
	h.eng.mu.Lock()
	defer h.eng.mu.Unlock()
	if h.eng.cancel != nil || h.eng.done != nil {
		t.Errorf("loop still registered after SetEnabled(false)")
	}
}

// waitFor waits, on store changes and a short poll, until cond returns nil.
func waitFor(t *testing.T, s *fsm.Store, cond func() error) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		changed := s.Changed()
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("timed out: %v", err)
		case <-changed:
		case <-poll.C:
		}
	}
}
