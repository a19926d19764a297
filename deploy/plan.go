package deploy

import (
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
	"github.com/hivemind-orch/hivemind/scheduler"
)

// plan collects the decisions of one step for one app; it becomes a
// single PlanCmd.
type plan struct {
	app     string
	now     time.Time
	create  []*pb.Task
	stop    []string
	stopped map[string]bool
	reasons []string // distinct stop reasons, in order

	// rotatedOut are tasks asked to stop earlier that may now leave the
	// ingress and DNS rotation.
	rotatedOut []string

	deployment    *pb.Deployment
	appVersion    uint64
	stableVersion uint64
}

func newPlan(app string, now time.Time) *plan {
	return &plan{app: app, now: now, stopped: make(map[string]bool)}
}

// stopTask asks for t to stop, for reason.
func (p *plan) stopTask(t *pb.Task, reason string) {
	if p.stopped[t.GetId()] {
		return
	}
	p.stopped[t.GetId()] = true
	p.stop = append(p.stop, t.GetId())
	for _, r := range p.reasons {
		if r == reason {
			return
		}
	}
	p.reasons = append(p.reasons, reason)
}

func (p *plan) empty() bool {
	return len(p.create) == 0 && len(p.stop) == 0 && p.deployment == nil &&
		p.appVersion == 0 && p.stableVersion == 0 && len(p.rotatedOut) == 0
}

// command returns the PlanCmd. A plan has one stop reason, so the
// reasons of its stops are joined.
// TODO: a per-task stop reason in PlanCmd would give each task its own
// message instead of the joined one.
func (p *plan) command() *pb.PlanCmd {
	return &pb.PlanCmd{
		Create:        p.create,
		Stop:          p.stop,
		StopReason:    strings.Join(p.reasons, "; "),
		Deployment:    p.deployment,
		App:           p.app,
		AppVersion:    p.appVersion,
		StableVersion: p.stableVersion,
		RotatedOut:    p.rotatedOut,
		At:            p.now.UnixNano(),
	}
}

// view is what a step knows of the cluster when it plans one app.
type view struct {
	snap  *fsm.Snapshot
	nodes map[string]*pb.Node
	now   time.Time
}

func newView(snap *fsm.Snapshot, now time.Time) *view {
	v := &view{snap: snap, nodes: make(map[string]*pb.Node), now: now}
	for _, n := range snap.Nodes() {
		v.nodes[n.GetName()] = n
	}
	return v
}

// lost reports whether t's node is down or gone: its task will never
// report again and must be replaced.
func (v *view) lost(t *pb.Task) bool {
	n := v.nodes[t.GetNode()]
	return n == nil || n.GetStatus() == pb.NodeDown
}

// moving reports whether t runs on a draining node: it must move to
// another node before it stops.
func (v *view) moving(t *pb.Task) bool {
	n := v.nodes[t.GetNode()]
	return n != nil && n.GetStatus() == pb.NodeDraining
}

// exited reports whether t's container ended although it should run.
func exited(t *pb.Task) bool {
	return t.GetState() == pb.TaskFailed || t.GetState() == pb.TaskStopped
}

// running returns the app's tasks whose desired state is run.
func (v *view) running(app string) []*pb.Task {
	var out []*pb.Task
	for _, t := range v.snap.TasksByApp(app) {
		if t.GetDesired() == pb.DesiredRun {
			out = append(out, t)
		}
	}
	return out
}

// matcher tells whether a task serves a spec, remembering the answer per
// task version: every task of a version carries that version's spec.
type matcher struct {
	spec *pb.AppSpec
	memo map[uint64]bool
}

func newMatcher(spec *pb.AppSpec) *matcher {
	return &matcher{spec: spec, memo: make(map[uint64]bool)}
}

func (m *matcher) match(t *pb.Task) bool {
	r, ok := m.memo[t.GetVersion()]
	if !ok {
		r = sameTasks(t.GetSpec(), m.spec)
		m.memo[t.GetVersion()] = r
	}
	return r
}

// maxPlacePerStep bounds the tasks one step places for one app, so that a
// plan, its Raft entry and the leader's memory stay small whatever the
// replica count; the next step, which runs on the store change, places more.
const maxPlacePerStep = 100

// place asks the scheduler for n tasks of version, at most maxPlacePerStep,
// and adds them to p. It returns how many it placed: 0 when no node is
// feasible.
func (e *Engine) place(v *view, p *plan, version uint64, spec *pb.AppSpec,
	n int, deployment string) int {
	if n <= 0 {
		return 0
	}
	n = min(n, maxPlacePerStep)
	var live []*pb.Task
	for _, t := range v.snap.Tasks() {
		if p.stopped[t.GetId()] {
			t = proto.Clone(t).(*pb.Task)
			t.Desired = pb.DesiredStop
		}
		live = append(live, t)
	}
	live = append(live, p.create...)

	places, err := scheduler.Place(v.snap.Nodes(), live, spec, p.app, n)
	if err != nil {
		e.warnOnce("place/"+p.app, "cannot place tasks", "app", p.app, "count", n, "error", err)
		return 0
	}
	for _, pl := range places {
		p.create = append(p.create, &pb.Task{
			Id:           e.cfg.NewID(),
			App:          p.app,
			Version:      version,
			Spec:         proto.Clone(spec).(*pb.AppSpec),
			Node:         pl.Node,
			Address:      pl.Address,
			Ports:        pl.Ports,
			Desired:      pb.DesiredRun,
			State:        pb.TaskPending,
			DeploymentId: deployment,
			CreatedAt:    p.now.UnixNano(),
		})
	}
	return len(places)
}

// byAge sorts tasks oldest first.
func byAge(ts []*pb.Task) {
	sort.SliceStable(ts, func(i, j int) bool { return older(ts[i], ts[j]) })
}

// older orders tasks by the index that created them; tasks placed by one
// plan are ordered by ID, so that every leader picks the same ones.
func older(a, b *pb.Task) bool {
	if a.GetCreateIndex() != b.GetCreateIndex() {
		return a.GetCreateIndex() < b.GetCreateIndex()
	}
	return a.GetId() < b.GetId()
}
