package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

const wait = 5 * time.Second

func TestJoinRefused(t *testing.T) {
	h := startAgent(t, "wrong", newFakeRuntime())

	select {
	case err := <-h.done:
		if !errors.Is(err, ErrJoinRefused) {
			t.Fatalf("Run = %v, want ErrJoinRefused", err)
		}
		h.done <- nil // for the cleanup
	case <-time.After(wait):
		t.Fatal("Run did not return after a refused token")
	}
}

func TestStartTaskEnv(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	tk := task("t1")
	tk.Spec.Command = []string{"/bin/server", "-v"}
	tk.Spec.Env = map[string]string{"GREETING": "hello"}
	tk.Spec.Ports = []*pb.Port{{Name: "http"}, {Name: "admin-ui"}}
	tk.Ports = map[string]int32{"http": 20000, "admin-ui": 20001}
	h.mgr.assign(tk)

	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
	spec, ok := rt.started("t1")
	if !ok || !rt.called("pull registry.test/web:v3") {
		t.Fatalf("runtime calls %v: want pull and start", rt.callList())
	}
	wantEnv := []string{
		"GREETING=hello",
		"HIVEMIND_IP=127.0.0.1",
		"HIVEMIND_PORT_ADMIN_UI=20001",
		"HIVEMIND_ADDR_ADMIN_UI=127.0.0.1:20001",
		"HIVEMIND_PORT_HTTP=20000",
		"HIVEMIND_ADDR_HTTP=127.0.0.1:20000",
		"HIVEMIND_APP=web",
		"HIVEMIND_TASK_ID=t1",
		"HIVEMIND_VERSION=3",
	}
	if !slices.Equal(spec.Env, wantEnv) {
		t.Errorf("env = %q\nwant %q", spec.Env, wantEnv)
	}
	if !slices.Equal(spec.Args, tk.Spec.Command) {
		t.Errorf("args = %q, want %q", spec.Args, tk.Spec.Command)
	}
	if spec.Image != "registry.test/web:v3" {
		t.Errorf("image = %q", spec.Image)
	}
	wantLabels := map[string]string{
		LabelTaskID: "t1", LabelApp: "web", LabelVersion: "3",
		LabelNode: "w1",
	}
	for k, v := range wantLabels {
		if spec.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, spec.Labels[k], v)
		}
	}
	wantLog := filepath.Join(h.agent.cfg.DataDir, "logs", "t1.log")
	if spec.LogPath != wantLog {
		t.Errorf("log path = %q, want %q", spec.LogPath, wantLog)
	}
}

func TestPullFailure(t *testing.T) {
	rt := newFakeRuntime()
	rt.pullErr["registry.test/web:v3"] = errors.New("not found")
	h := startAgent(t, "secret", rt)

	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskFailed, false))
	want := "pull registry.test/web:v3: not found"
	if got := h.mgr.report("t1").GetMessage(); got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if rt.called("start t1") {
		t.Error("started a task whose pull failed")
	}
}

func TestExitReportsFailed(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
	rt.exit("t1", 3)

	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskFailed, false))
	r := h.mgr.report("t1")
	if r.GetExitCode() != 3 || r.GetMessage() != "exited with code 3" {
		t.Errorf("report = %v, want exit code 3", r)
	}

	// A new list with the failed task still desired run must not
	// restart it: the leader places a replacement.
	h.mgr.assign(task("t1"), task("t2"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t2", pb.TaskRunning, true))
	if n := count(rt.callList(), "start t1"); n != 1 {
		t.Errorf("t1 started %d times, want 1", n)
	}
}

func TestDesiredStop(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	tk := task("t1")
	tk.Spec.Update = &pb.UpdateSpec{StopTimeout: int64(3 * time.Second)}
	h.mgr.assign(tk)
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

	// Already out of rotation, with no connection open: it drains at
	// once and stops.
	stop := task("t1")
	stop.Spec.Update = tk.Spec.Update
	stop.Desired = pb.DesiredStop
	stop.OutOfRotation = true
	h.mgr.assign(stop)

	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskStopped, false))
	if d, ok := rt.stopTimeout("t1"); !ok || d != 3*time.Second {
		t.Errorf("stop timeout = %s (called %v), want 3s", d, ok)
	}

	// Once the leader deletes the task, nothing more happens to it.
	h.mgr.assign()
	testutil.WaitFor(t, wait, func() error {
		if !rt.called("remove t1") {
			return fmt.Errorf("t1 not removed; calls %v", rt.callList())
		}
		return nil
	})
}

func TestUnlistedTaskRemoved(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
	h.mgr.assign()

	testutil.WaitFor(t, wait, func() error {
		if !rt.called("stop t1") || !rt.called("remove t1") {
			return fmt.Errorf("t1 not stopped and removed; calls %v",
				rt.callList())
		}
		return nil
	})
	if d, _ := rt.stopTimeout("t1"); d != defaultStopTimeout {
		t.Errorf("stop timeout = %s, want the default", d)
	}
}

func TestRestartReconciliation(t *testing.T) {
	rt := newFakeRuntime()
	rt.add("run-ok", true, 0)    // assigned, running: adopted
	rt.add("run-dead", false, 2) // assigned, exited: reported failed
	rt.add("orphan", true, 0)    // not assigned: stopped and removed
	rt.add("to-stop", true, 0)   // assigned with desired stop: drained
	rt.add("gone", false, 0)     // desired stop, exited: just removed
	h := startAgent(t, "secret", rt)

	// Nothing is touched before the first list arrives.
	testutil.WaitFor(t, wait, func() error {
		if h.mgr.openStreams() == 0 {
			return errors.New("no assignment stream opened")
		}
		return nil
	})
	if calls := rt.callList(); len(calls) != 0 {
		t.Fatalf("runtime calls before any assignment: %v", calls)
	}

	stop := task("to-stop")
	stop.Desired = pb.DesiredStop
	gone := task("gone")
	gone.Desired = pb.DesiredStop
	h.mgr.assign(task("run-ok"), task("run-dead"), stop, gone)

	// The adopted container of a task to stop drains like any other:
	// it keeps running until the task is out of rotation.
	testutil.WaitFor(t, wait, h.mgr.hasReport("run-ok", pb.TaskRunning, true))
	testutil.WaitFor(t, wait, h.mgr.hasReport("run-dead", pb.TaskFailed, false))
	testutil.WaitFor(t, wait, h.mgr.hasReport("to-stop", pb.TaskDraining, false))
	testutil.WaitFor(t, wait, func() error {
		if !rt.called("remove gone") {
			return fmt.Errorf("exited container not removed; calls %v",
				rt.callList())
		}
		return nil
	})
	if rt.called("stop to-stop") || rt.called("stop gone") {
		t.Fatalf("stopped before out of rotation; calls %v", rt.callList())
	}

	stop = proto.Clone(stop).(*pb.Task)
	stop.OutOfRotation = true
	h.mgr.assign(task("run-ok"), task("run-dead"), stop, gone)
	testutil.WaitFor(t, wait, h.mgr.hasReport("to-stop", pb.TaskStopped, false))
	testutil.WaitFor(t, wait, func() error {
		for _, c := range []string{
			"watch run-ok", "stop orphan", "remove orphan",
			"watch to-stop", "stop to-stop", "remove to-stop",
		} {
			if !rt.called(c) {
				return fmt.Errorf("no %q; calls %v", c, rt.callList())
			}
		}
		return nil
	})

	if r := h.mgr.report("run-dead"); r.GetExitCode() != 2 {
		t.Errorf("run-dead report = %v, want exit code 2", r)
	}
	for _, c := range rt.callList() {
		switch c {
		case "stop run-ok", "remove run-ok", "start run-ok",
			"pull registry.test/web:v3", "start run-dead":
			t.Errorf("unexpected call %q", c)
		}
	}
	if r := h.mgr.report("orphan"); r != nil {
		t.Errorf("reported unassigned container: %v", r)
	}

	// An adopted container's exit is noticed.
	rt.exit("run-ok", 1)
	testutil.WaitFor(t, wait, h.mgr.hasReport("run-ok", pb.TaskFailed, false))
}

func TestRestartLeavesOtherNodesContainers(t *testing.T) {
	// Two workers share one containerd namespace; this one is w1.
	rt := newFakeRuntime()
	rt.add("mine", true, 0) // not assigned: stopped and removed
	rt.addLabelled("theirs", map[string]string{
		LabelTaskID: "theirs", LabelNode: "w2"}, true, 0)
	rt.addLabelled("unlabelled", map[string]string{
		LabelTaskID: "unlabelled"}, true, 0)
	h := startAgent(t, "secret", rt)

	h.mgr.assign()
	testutil.WaitFor(t, wait, func() error {
		if !rt.called("remove mine") {
			return fmt.Errorf("own orphan not removed; calls %v",
				rt.callList())
		}
		return nil
	})

	// Its own removal is done; nothing else may have been touched.
	for _, c := range rt.callList() {
		if strings.Contains(c, "theirs") || strings.Contains(c, "unlabelled") {
			t.Errorf("call %q on a container this worker does not own", c)
		}
	}
	for _, id := range []string{"theirs", "unlabelled"} {
		if r := h.mgr.report(id); r != nil {
			t.Errorf("reported a container it does not own: %v", r)
		}
	}
}

func TestOwnedContainers(t *testing.T) {
	ctr := func(id, node string) runtime.Container {
		labels := map[string]string{LabelTaskID: id}
		if node != "" {
			labels[LabelNode] = node
		}
		return runtime.Container{ID: id, Labels: labels}
	}
	tests := []struct {
		name string
		in   []runtime.Container
		want []string
		warn bool
	}{
		{name: "none", in: nil, want: nil},
		{name: "own and others", in: []runtime.Container{
			ctr("a", "w1"), ctr("b", "w2"), ctr("c", "w1")},
			want: []string{"a", "c"}},
		{name: "unlabelled left alone with a warning", in: []runtime.Container{
			ctr("a", "w1"), ctr("old", "")},
			want: []string{"a"}, warn: true},
		{name: "empty label is not ours", in: []runtime.Container{
			{ID: "x", Labels: map[string]string{LabelNode: ""}}},
			want: nil, warn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf strings.Builder
			log := hclog.New(&hclog.LoggerOptions{Output: &buf,
				Level: hclog.Warn})
			got := ownedContainers(tt.in, "w1", log)
			var ids []string
			for _, c := range got {
				ids = append(ids, c.ID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("owned = %v, want %v", ids, tt.want)
			}
			warnings := strings.Count(buf.String(), "[WARN]")
			if want := map[bool]int{false: 0, true: 1}[tt.warn]; warnings != want {
				t.Errorf("%d warnings, want %d: %q", warnings, want, buf.String())
			}
		})
	}
}

func TestHealthChecks(t *testing.T) {
	for _, kind := range []string{pb.ProtocolHTTP, pb.ProtocolTCP} {
		t.Run(kind, func(t *testing.T) {
			var failing atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					if failing.Load() || r.URL.Path != "/healthz" {
						w.WriteHeader(http.StatusInternalServerError)
					}
				}))
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
			p, _ := strconv.Atoi(port)

			rt := newFakeRuntime()
			h := startAgent(t, "secret", rt)
			tk := task("t1")
			tk.Ports = map[string]int32{"http": int32(p)}
			tk.Spec.Health = &pb.HealthSpec{
				Interval: int64(20 * time.Millisecond),
				Timeout:  int64(time.Second),
			}
			if kind == pb.ProtocolHTTP {
				tk.Spec.Health.Http = &pb.HTTPCheck{Port: "http", Path: "/healthz"}
			} else {
				tk.Spec.Health.Tcp = &pb.TCPCheck{Port: "http"}
			}
			h.mgr.assign(tk)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

			// HTTP fails on a 500; TCP once nothing listens.
			if kind == pb.ProtocolHTTP {
				failing.Store(true)
			} else {
				srv.Close()
			}
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, false))
			if msg := h.mgr.report("t1").GetMessage(); msg == "" {
				t.Error("unhealthy report has no message")
			}
		})
	}
}

func TestHealthStartPeriod(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	// Nothing listens on the port: every check fails.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()

	tk := task("t1")
	tk.Ports = map[string]int32{"tcp": int32(port)}
	tk.Spec.Health = &pb.HealthSpec{
		Tcp:         &pb.TCPCheck{Port: "tcp"},
		Interval:    int64(20 * time.Millisecond),
		Timeout:     int64(time.Second),
		StartPeriod: int64(time.Hour),
	}
	h.mgr.assign(tk)

	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, false))
	if msg := h.mgr.report("t1").GetMessage(); msg != "" {
		t.Errorf("message during start period = %q, want none", msg)
	}
}

func TestFullResend(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt, func(_ *harness, c *Config) {
		c.ReportInterval = 20 * time.Millisecond
	})

	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

	// t1 does not change, yet its report keeps coming.
	testutil.WaitFor(t, wait, func() error {
		if n := h.mgr.receivedFor("t1"); n < 5 {
			return fmt.Errorf("t1 reported %d times, want 5", n)
		}
		return nil
	})
}

func TestStaticStability(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
	opened := h.mgr.openStreams()

	// The manager loses its leader: streams fail and reconnect.
	h.mgr.setRefuse(true)
	testutil.WaitFor(t, wait, func() error {
		if n := h.mgr.openStreams(); n < opened+3 {
			return fmt.Errorf("%d reconnects, want 3", n-opened)
		}
		return nil
	})
	for _, c := range rt.callList() {
		if c == "stop t1" || c == "remove t1" {
			t.Fatalf("%q while no manager served assignments", c)
		}
	}

	// Back to normal: the task list carries on where it was.
	h.mgr.setRefuse(false)
	h.mgr.assign(task("t1"), task("t2"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t2", pb.TaskRunning, true))
	if n := count(rt.callList(), "start t1"); n != 1 {
		t.Errorf("t1 started %d times, want 1", n)
	}
}

func TestStaleAssignmentsIgnored(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	h.mgr.assignAt(10, task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

	// A lagging replica, then an empty one: neither may remove t1.
	h.mgr.assignAt(5)
	testutil.WaitFor(t, wait, h.mgr.streamed(5))
	h.mgr.assignAt(0)
	testutil.WaitFor(t, wait, h.mgr.streamed(0))
	h.mgr.assignAt(11, task("t1"), task("t2"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t2", pb.TaskRunning, true))
	for _, c := range rt.callList() {
		if c == "stop t1" || c == "remove t1" {
			t.Fatalf("%q after a stale assignment list", c)
		}
	}
}

func TestReportFailover(t *testing.T) {
	other := startManager(t, "secret")
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt, func(_ *harness, c *Config) {
		c.Join = append(c.Join, other.addr)
	})

	// The first manager streams assignments but cannot take reports.
	h.mgr.failReports()
	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, other.hasReport("t1", pb.TaskRunning, true))
	if r := h.mgr.report("t1"); r != nil {
		t.Errorf("failing manager recorded %v", r)
	}
}

func TestJoinsGossip(t *testing.T) {
	// The manager's own gossip pool, advertising the fake manager's
	// gRPC port so that the agent keeps talking to it.
	var mp *gossip.Pool
	managerPool := func(h *harness, _ *Config) {
		mp = startManagerPool(t, h, 0)
	}
	h := startAgent(t, "secret", newFakeRuntime(), withRealGossip,
		managerPool)

	testutil.WaitFor(t, wait, func() error {
		for _, m := range mp.Members() {
			if m.Meta.Name == "w1" && m.Alive &&
				m.Meta.Role == pb.RoleWorker && m.Meta.DNSPort > 0 &&
				int(m.Meta.DNSPort) == h.mgr.registeredDNSPort() {
				return nil
			}
		}
		return fmt.Errorf("manager pool sees no alive worker w1: %v",
			mp.Members())
	})
	h.mgr.assign(task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

	// Shutting down leaves the pool rather than dying in it.
	h.stop()
	testutil.WaitFor(t, wait, func() error {
		for _, m := range mp.Members() {
			if m.Meta.Name == "w1" && !m.Alive {
				return nil
			}
		}
		return errors.New("worker w1 still alive in the manager's pool")
	})
}

func TestRestartWithoutContainer(t *testing.T) {
	rt := newFakeRuntime()
	h := startAgent(t, "secret", rt)

	// The leader's copies after an agent restart that lost every
	// container: only the task that never started may start.
	pending := task("pending")
	pending.State = pb.TaskPending
	ran := task("ran")
	ran.State = pb.TaskRunning
	pullFailed := task("pull-failed")
	pullFailed.State = pb.TaskFailed
	pullFailed.Message = "pull x: not found"
	h.mgr.assign(pending, ran, pullFailed)

	testutil.WaitFor(t, wait, h.mgr.hasReport("pending", pb.TaskRunning, true))
	testutil.WaitFor(t, wait, h.mgr.hasReport("ran", pb.TaskFailed, false))
	testutil.WaitFor(t, wait, h.mgr.hasReport("pull-failed", pb.TaskFailed, false))
	if r := h.mgr.report("ran"); r.GetMessage() != "container lost" {
		t.Errorf("ran: report %v, want message \"container lost\"", r)
	}
	if r := h.mgr.report("pull-failed"); r.GetMessage() != "pull x: not found" {
		t.Errorf("pull-failed: report %v, want its message kept", r)
	}
	for _, c := range rt.callList() {
		if c == "start ran" || c == "start pull-failed" {
			t.Errorf("unexpected %q", c)
		}
	}
}

func count(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}

// startManagerPool starts the gossip pool of manager m1 on port (0: a
// free one), advertising h's fake manager as its gRPC address, and
// makes Register return it.
func startManagerPool(t *testing.T, h *harness, port int) *gossip.Pool {
	t.Helper()
	_, p, _ := net.SplitHostPort(h.mgr.addr)
	rpcPort, _ := strconv.Atoi(p)
	mp, err := gossip.New(gossip.Config{
		Name:     "m1",
		BindAddr: "127.0.0.1",
		Port:     port,
		Meta: gossip.Meta{Role: pb.RoleManager, Name: "m1",
			Address: "127.0.0.1", RPCPort: rpcPort},
		Logger: testutil.Logger(t, hclog.Debug).Named("m1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Shutdown() })
	h.mgr.managers = []*pb.ManagerAddress{{
		Name: "m1", Address: "127.0.0.1", RpcPort: int32(rpcPort),
		GossipPort: int32(mp.Port()),
	}}
	return mp
}

// managerAlive is a waitFor condition: p sees manager m1 alive or
// dead, as want says.
func managerAlive(p *gossip.Pool, want bool) func() error {
	return func() error {
		for _, m := range p.Members() {
			if m.Meta.Name == "m1" && m.Alive == want {
				return nil
			}
		}
		return fmt.Errorf("worker pool does not see m1 alive=%v: %+v",
			want, p.Members())
	}
}

// aliveFor is a waitFor condition: p has seen manager m1 alive for d.
func aliveFor(p *gossip.Pool, d time.Duration) func() error {
	return func() error {
		for _, m := range p.Members() {
			if m.Meta.Name == "m1" && m.Alive && time.Since(m.Since) >= d {
				return nil
			}
		}
		return fmt.Errorf("worker pool has not seen m1 alive for %s: %+v",
			d, p.Members())
	}
}

func TestRejoinsRestartedManagers(t *testing.T) {
	// The manager dies without leaving and comes back on the same
	// address with a pool that knows nobody. Either the worker has
	// already declared it dead, and memberlist never contacts a dead
	// node, or the new pool answers the pings to its old name, and the
	// worker tells it nothing. In both, only a rejoin merges the pools.
	tests := []struct {
		name string
		// calledDead: the worker's pool declares m1 dead before the
		// new pool starts; otherwise the assignment stream breaks
		// and comes back instead.
		calledDead bool
	}{
		{name: "after the worker called it dead", calledDead: true},
		{name: "before the worker called it dead"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var first *gossip.Pool
			h := startAgent(t, "secret", newFakeRuntime(),
				withRealGossip, func(h *harness, _ *Config) {
					first = startManagerPool(t, h, 0)
				})
			wp := <-h.real
			testutil.WaitFor(t, wait, managerAlive(wp, true))
			h.mgr.assign(task("t1"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))

			if !tc.calledDead {
				// Past the few gossip rounds in which the worker
				// re-sends its own join, which would otherwise
				// introduce it to the new pool, as it cannot in a
				// cluster that has run for a while.
				testutil.WaitFor(t, wait, aliveFor(wp, time.Second))
				n := h.mgr.openStreams()
				h.mgr.setRefuse(true)
				testutil.WaitFor(t, wait, func() error {
					if h.mgr.openStreams() == n {
						return errors.New("assignment stream not broken")
					}
					return nil
				})
			}
			if err := first.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if tc.calledDead {
				testutil.WaitFor(t, wait, managerAlive(wp, false))
			}
			second := startManagerPool(t, h, first.Port())
			h.mgr.setRefuse(false)

			testutil.WaitFor(t, wait, managerAlive(wp, true))
			testutil.WaitFor(t, wait, func() error {
				for _, m := range second.Members() {
					if m.Meta.Name == "w1" && m.Alive {
						return nil
					}
				}
				return fmt.Errorf("restarted manager does not see "+
					"w1 alive: %+v", second.Members())
			})
		})
	}
}

// TestTeardownRetryBackoff checks that a teardown that keeps failing,
// as when containerd is gone, is retried with a growing delay rather
// than at once after each failure.
func TestTeardownRetryBackoff(t *testing.T) {
	tests := []struct {
		name    string
		running bool
	}{
		{name: "running container", running: true},
		{name: "exited container", running: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFakeRuntime()
			rt.add("orphan", tt.running, 0)
			rt.failStops(errors.New("dial unix containerd.sock: " +
				"connect: connection refused"))
			h := startAgent(t, "secret", rt)

			// The orphan is not assigned: the agent tears it down.
			h.mgr.assign(task("t1"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
			testutil.WaitFor(t, wait, func() error {
				if n := teardownCalls(rt, "orphan"); n < 2 {
					return fmt.Errorf("%d teardown calls, want a retry", n)
				}
				return nil
			})

			// 100ms doubling: a handful of tries in 2s, not thousands.
			start := teardownCalls(rt, "orphan")
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if n := teardownCalls(rt, "orphan") - start; n >= 30 {
					t.Fatalf("%d teardown calls in under 2s", n)
				}
				time.Sleep(10 * time.Millisecond) // sampling, not sync
			}

			// Once containerd is back the retry finishes the job.
			rt.failStops(nil)
			testutil.WaitFor(t, 10*time.Second, func() error {
				if !rt.called("remove orphan") || rt.has("orphan") {
					return errors.New("orphan not removed after recovery")
				}
				return nil
			})
		})
	}
}

// teardownCalls counts the Stop and Remove calls for id.
func teardownCalls(rt *fakeRuntime, id string) int {
	calls := rt.callList()
	return count(calls, "stop "+id) + count(calls, "remove "+id)
}

// TestAdoptKeepsLeaderHealth checks that a container adopted after an
// agent restart is reported with the leader's health until a check says
// otherwise: a healthy task reported unhealthy would read as a failure
// to the leader and roll back a good deployment.
func TestAdoptKeepsLeaderHealth(t *testing.T) {
	tests := []struct {
		name    string
		checked bool // the spec has an HTTP check
		healthy bool // the leader's view in the assignment
		want    bool // the health of the first running report
	}{
		{name: "healthy with check", checked: true, healthy: true, want: true},
		{name: "unhealthy with check", checked: true, healthy: false, want: false},
		{name: "no check", checked: false, healthy: false, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each check waits for the status the test hands it, so
			// nothing but the test decides when a check ends.
			status := make(chan int)
			srv := httptest.NewServer(http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					select {
					case code := <-status:
						w.WriteHeader(code)
					case <-r.Context().Done():
					}
				}))
			t.Cleanup(srv.Close) // after the agent stops its checks
			p := srv.Listener.Addr().(*net.TCPAddr).Port

			rt := newFakeRuntime()
			rt.add("t1", true, 0)
			h := startAgent(t, "secret", rt)

			tk := task("t1")
			tk.State = pb.TaskRunning
			tk.Healthy = tt.healthy
			tk.Ports = map[string]int32{"http": int32(p)}
			if tt.checked {
				tk.Spec.Health = &pb.HealthSpec{
					Http:     &pb.HTTPCheck{Port: "http", Path: "/"},
					Interval: int64(20 * time.Millisecond),
					Timeout:  int64(time.Minute),
				}
			}
			h.mgr.assign(tk)

			// The first check is still waiting: the report is the
			// leader's view (healthy without checks).
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, tt.want))
			if !tt.checked {
				return
			}
			answer := func(code int) {
				select {
				case status <- code:
				case <-time.After(wait):
					t.Fatalf("no health check came to answer %d", code)
				}
			}

			answer(http.StatusOK)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
			answer(http.StatusInternalServerError)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, false))

			// Before the failed check, only a task the leader saw
			// unhealthy was ever reported unhealthy.
			reps := h.mgr.reportsFor("t1")
			for i, r := range reps[:len(reps)-1] {
				if r.GetState() == pb.TaskRunning && !r.GetHealthy() &&
					tt.healthy {
					t.Errorf("report %d of %d unhealthy before a "+
						"failed check: %v", i+1, len(reps), r)
				}
			}
			if msg := reps[len(reps)-1].GetMessage(); msg == "" {
				t.Error("unhealthy report after the failed check " +
					"has no message")
			}
		})
	}
}
