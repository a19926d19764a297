package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

var t0 = time.Unix(1_800_000_000, 0)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fakeLiveness struct {
	mu      sync.Mutex
	members map[string]gossip.Member
}

func (l *fakeLiveness) Members() []gossip.Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []gossip.Member
	for _, m := range l.members {
		out = append(out, m)
	}
	return out
}

func (l *fakeLiveness) set(meta gossip.Meta, alive bool, since time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.members[meta.Name] = gossip.Member{Meta: meta, Alive: alive, Since: since}
}

// setAddr sets the gossip address ("ip:port") of a member set before.
func (l *fakeLiveness) setAddr(name, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.members[name]
	m.Addr = addr
	l.members[name] = m
}

var errLost = errors.New("proposal lost")

// fakeProposer encodes a command and applies it to the FSM with the next
// index, like a Raft leader of one. lose, when set, may drop a proposal
// before it is applied, or report an error after it was applied.
type fakeProposer struct {
	mu      sync.Mutex
	fsm     *fsm.FSM
	index   uint64
	n       int // proposals so far
	lose    func(n int, t fsm.CommandType) (before, after bool)
	created map[string]int // task id -> times it was in a PlanCmd create
}

func (p *fakeProposer) Propose(_ context.Context, t fsm.CommandType, msg proto.Message) (uint64, error) {
	return p.propose(t, msg, true)
}

// propose applies msg; mayLose says whether lose applies.
func (p *fakeProposer) propose(t fsm.CommandType, msg proto.Message, mayLose bool) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := fsm.Encode(t, msg)
	if err != nil {
		return 0, err
	}
	p.n++
	var before, after bool
	if p.lose != nil && mayLose {
		before, after = p.lose(p.n, t)
	}
	if before {
		return 0, errLost
	}
	if plan, ok := msg.(*pb.PlanCmd); ok {
		for _, tk := range plan.GetCreate() {
			p.created[tk.GetId()]++
		}
	}
	p.index++
	if r := p.fsm.Apply(&raft.Log{Index: p.index, Type: raft.LogCommand, Data: b}); r != nil {
		if err, ok := r.(error); ok {
			return p.index, err
		}
	}
	if after {
		return 0, errLost
	}
	return p.index, nil
}

type testWriter struct{ t *testing.T }

// logBuffer keeps what the engine logs, for tests that expect a warning.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines logged so far that contain every one of subs.
func (b *logBuffer) lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		all := true
		for _, sub := range subs {
			all = all && strings.Contains(l, sub)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

// harness is one store with fake workers, a fake clock and liveness, and
// an engine that a test may replace at any time.
type harness struct {
	t     *testing.T
	fsm   *fsm.FSM
	clock *fakeClock
	live  *fakeLiveness
	prop  *fakeProposer
	eng   *Engine
	log   hclog.Logger
	logs  *logBuffer

	idMu sync.Mutex
	ids  int

	// healthy says whether a running task passes its checks.
	healthy func(t *pb.Task) bool
	// crash, when set, makes a running task fail.
	crash func(t *pb.Task) bool
	// freshEngine builds a new engine before every step (a leader change).
	freshEngine bool
	// agentStops makes workers stop a task as the agent does: it reports
	// draining, keeps running until the task is out of rotation, then
	// reports stopped. Otherwise a task asked to stop stops at once.
	agentStops bool
	// lagging names alive workers that confirm no endpoint set.
	lagging map[string]bool
}

func newHarness(t *testing.T, workers int) *harness {
	t.Helper()
	logs := &logBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info,
		Output: io.MultiWriter(testWriter{t}, logs)})
	f := fsm.New(log)
	h := &harness{
		t:       t,
		fsm:     f,
		clock:   &fakeClock{now: t0},
		live:    &fakeLiveness{members: map[string]gossip.Member{}},
		prop:    &fakeProposer{fsm: f, created: map[string]int{}},
		log:     log,
		logs:    logs,
		healthy: func(*pb.Task) bool { return true },
		lagging: map[string]bool{},
	}
	h.eng = h.newEngine()
	for i := 1; i <= workers; i++ {
		h.addWorker(fmt.Sprintf("w%d", i))
	}
	return h
}

func (h *harness) newEngine(opts ...func(*Config)) *Engine {
	cfg := Config{
		Logger:      h.log,
		Proposer:    h.prop,
		Store:       h.fsm.State(),
		Clock:       h.clock,
		Liveness:    h.live,
		WorkerGrace: 5 * time.Second,
		NewID: func() string {
			h.idMu.Lock()
			defer h.idMu.Unlock()
			h.ids++
			return fmt.Sprintf("id%04d", h.ids)
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	return New(cfg)
}

func (h *harness) store() *fsm.Store { return h.fsm.State() }

func (h *harness) apply(t fsm.CommandType, msg proto.Message) {
	h.t.Helper()
	if _, err := h.prop.propose(t, msg, false); err != nil {
		h.t.Fatalf("apply %v: %v", t, err)
	}
}

func (h *harness) addWorker(name string) {
	h.apply(fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name: name, Role: pb.RoleWorker, Address: "10.0.0." + name[1:],
		Status: pb.NodeReady, RegisteredAt: h.clock.Now().UnixNano(),
	}})
	h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: name}, true, h.clock.Now())
}

// deploy stores spec as the app's next version.
func (h *harness) deploy(spec *pb.AppSpec) *pb.DeployAppCmd {
	h.t.Helper()
	cmd, changed := NewVersion(h.store().App(spec.GetName()), spec, h.clock.Now(), h.eng.cfg.NewID)
	if !changed {
		h.t.Fatalf("deploy %q: nothing changed", spec.GetName())
	}
	h.apply(fsm.DeployAppType, cmd)
	return cmd
}

// step runs one engine step; proposal errors are expected when
// proposals are lost.
func (h *harness) step() {
	h.t.Helper()
	if h.freshEngine {
		h.eng = h.newEngine()
	}
	if err := h.eng.Step(context.Background()); err != nil && !errors.Is(err, errLost) {
		h.t.Fatalf("step: %v", err)
	}
}

// work lets every alive worker act on its tasks and report, once. A
// worker that is not lagging also confirms the endpoint set it saw (the
// store's index when work began) while some task it serves has been asked
// to stop since the set it confirmed last, as an agent whose endpoint set
// changed does.
func (h *harness) work() {
	alive := map[string]bool{}
	for _, m := range h.live.Members() {
		alive[m.Meta.Name] = m.Alive
	}
	snap := h.store().Snapshot()
	seen := snap.Index()
	reports := map[string][]*pb.TaskReport{}
	for _, t := range snap.Tasks() {
		if !alive[t.GetNode()] {
			continue
		}
		r := &pb.TaskReport{TaskId: t.GetId(), State: t.GetState(), Healthy: t.GetHealthy()}
		switch {
		case t.GetDesired() == pb.DesiredStop:
			if exited(t) {
				continue
			}
			r.State, r.Healthy = pb.TaskStopped, false
			if h.agentStops && !t.GetOutOfRotation() {
				r.State, r.Healthy = pb.TaskDraining, t.GetHealthy()
			}
		case exited(t):
			continue
		case h.crash != nil && t.GetState() == pb.TaskRunning && h.crash(t):
			r.State, r.Healthy, r.ExitCode, r.Message = pb.TaskFailed, false, 1, "crashed"
		default:
			r.State, r.Healthy = pb.TaskRunning, h.healthy(t)
		}
		if r.State == t.GetState() && r.Healthy == t.GetHealthy() {
			continue
		}
		reports[t.GetNode()] = append(reports[t.GetNode()], r)
	}
	for _, n := range snap.Nodes() {
		if n.GetRole() != pb.RoleWorker || !alive[n.GetName()] {
			continue
		}
		cmd := &pb.TaskReportsCmd{Node: n.GetName(), Reports: reports[n.GetName()],
			At: h.clock.Now().UnixNano()}
		if !h.lagging[n.GetName()] && stale(snap, n) {
			cmd.EndpointsIndex = seen
		}
		if len(cmd.Reports) > 0 || cmd.EndpointsIndex != 0 {
			h.apply(fsm.TaskReportsType, cmd)
		}
	}
}

// stale reports whether a task in rotation was asked to stop after the
// endpoint set n confirmed last.
func stale(snap *fsm.Snapshot, n *pb.Node) bool {
	for _, t := range snap.Tasks() {
		if t.GetDesired() == pb.DesiredStop && !t.GetOutOfRotation() &&
			t.GetStopIndex() > n.GetEndpointsIndex() {
			return true
		}
	}
	return false
}

// run steps, lets workers work and advances the clock by tick until done
// returns nil, checking check after every step.
func (h *harness) run(tick time.Duration, maxSteps int, check func(), done func() error) {
	h.t.Helper()
	var err error
	for i := 0; i < maxSteps; i++ {
		h.step()
		if check != nil {
			check()
		}
		if err = done(); err == nil {
			return
		}
		h.work()
		h.clock.Advance(tick)
	}
	h.t.Fatalf("after %d steps: %v", maxSteps, err)
}

// running returns the app's tasks with desired run.
func (h *harness) running(app string) []*pb.Task {
	var out []*pb.Task
	for _, t := range h.store().TasksByApp(app) {
		if t.GetDesired() == pb.DesiredRun {
			out = append(out, t)
		}
	}
	return out
}

func (h *harness) deploymentStatus(app, want string) func() error {
	return func() error {
		d := h.store().LatestDeployment(app)
		if d == nil || d.GetStatus() != want {
			return fmt.Errorf("deployment of %q is %v, want %s", app, d.GetStatus(), want)
		}
		return nil
	}
}

// webSpec is a spec with update settings that make rollouts short.
func webSpec(image string, replicas int32) *pb.AppSpec {
	return &pb.AppSpec{
		Name:     "web",
		Image:    image,
		Replicas: replicas,
		Ports:    []*pb.Port{{Name: "http", Protocol: pb.ProtocolHTTP}},
		Update: &pb.UpdateSpec{
			BatchSize:        1,
			MinHealthyTime:   int64(2 * time.Second),
			HealthyDeadline:  int64(10 * time.Second),
			ProgressDeadline: int64(30 * time.Second),
			AutoRollback:     proto.Bool(true),
		},
	}
}

// steady deploys spec and runs until every replica is running healthy.
func (h *harness) steady(spec *pb.AppSpec) {
	h.t.Helper()
	h.deploy(spec)
	h.run(time.Second, 20, nil, func() error {
		n := 0
		for _, t := range h.running(spec.GetName()) {
			if t.GetHealthy() {
				n++
			}
		}
		if n != int(spec.GetReplicas()) {
			return fmt.Errorf("%d of %d replicas healthy", n, spec.GetReplicas())
		}
		return nil
	})
}

func versionsOf(ts []*pb.Task) map[uint64]int {
	m := map[uint64]int{}
	for _, t := range ts {
		m[t.GetVersion()]++
	}
	return m
}

// leaderVariant disturbs the leadership of a run: a new engine before
// every step, optionally losing proposals or their replies.
type leaderVariant struct {
	name  string
	fresh bool
	lose  func(int, fsm.CommandType) (bool, bool)
}

func leaderVariants() []leaderVariant {
	everyNth := func(n int, after bool) func(int, fsm.CommandType) (bool, bool) {
		return func(i int, _ fsm.CommandType) (bool, bool) {
			if i%n != 0 {
				return false, false
			}
			return !after, after
		}
	}
	return []leaderVariant{
		{name: "same leader"},
		{name: "new leader every step", fresh: true},
		{name: "new leader and lost proposals", fresh: true, lose: everyNth(3, false)},
		{name: "new leader and lost replies", fresh: true, lose: everyNth(4, true)},
	}
}

// disturb applies v to the steps from now on.
func (h *harness) disturb(v leaderVariant) {
	h.freshEngine = v.fresh
	h.prop.lose = v.lose
}
