package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// defaultStopTimeout applies when a task's spec sets no stop_timeout.
const defaultStopTimeout = 10 * time.Second

// A failed stop or remove is retried after minRetryDelay, doubling up
// to maxRetryDelay.
const (
	minRetryDelay = 100 * time.Millisecond
	maxRetryDelay = 30 * time.Second
)

// maxStarts bounds the starts (image pull, then container create and
// start) that run at once on a worker. An app of 1000 replicas must not
// put 1000 operations on containerd at once: each start prepares a
// snapshot and spawns a shim, and hundreds together load the host for
// minutes and slow the containers already running. Starts are mostly
// CPU and disk bound, so a few at a time start the queue about as fast;
// four still lets pulls of different images overlap and one slow pull
// not hold back the other starts. The tasks queued behind them are
// pending and cost nothing to cancel: they never reach the runtime.
const maxStarts = 4

// drainPoll is how often a draining task's open ingress connections are
// counted while it waits for them to end.
const drainPoll = 50 * time.Millisecond

// assignment is one list of the tasks assigned to this node.
type assignment struct {
	tasks []*pb.Task
	pos   position
}

// opKind names a container operation run outside the runner goroutine.
type opKind int

const (
	opNone     opKind = iota
	opStart           // pull the image and start the container
	opTeardown        // stop the container if running, then remove it
	opWatch           // ask the runtime to report the exit of an adopted container
	opDrain           // wait for the open connections of a task out of rotation
)

// opResult is what an operation sends back to the runner.
type opResult struct {
	id    string
	kind  opKind
	stage string // the step that failed: "pull", "start", "stop", "remove", "watch"
	err   error
	at    time.Time // when the container started (opStart)
}

// healthResult is one health check outcome for the runner.
type healthResult struct {
	id      string
	gen     int
	healthy bool
	message string
}

// taskState is the runner's record of one task or container. Only the
// runner goroutine reads or writes it.
type taskState struct {
	id   string
	task *pb.Task // the latest assignment; nil when not assigned
	log  hclog.Logger

	// What the runtime holds.
	container bool // a container with this ID exists
	running   bool
	exitCode  int32
	startedAt time.Time

	// What is reported.
	state     string // "" until the runner has decided
	healthy   bool
	message   string
	published *pb.TaskReport

	op          opKind        // the operation in flight, opNone if none
	pendingExit *runtime.Exit // an exit seen while the start was in flight

	// cancelStart cancels the start in flight (opStart); startCancelled
	// is set once it was called because the task is desired stop or no
	// longer assigned, and makes the start's result finish as a stop.
	cancelStart    context.CancelFunc
	startCancelled bool

	// A failed teardown waits retryArmed for its retry; retries counts
	// the failures in a row and sets the delay.
	retries    int
	retryArmed bool

	checkGen  int
	stopCheck context.CancelFunc

	// drained is set once a task out of rotation has drained for its
	// drain_timeout, or exited: it may be stopped.
	drained   bool
	stopDrain context.CancelFunc // ends the drain wait early

	// drainAbandoned is set when the task is desired run again while its
	// drain wait (opDrain) is in flight: the wait is cancelled and its
	// result must not mark the task drained. resumeHealthy is the health
	// to report if a draining task is brought back to running.
	drainAbandoned bool
	resumeHealthy  bool
}

type runnerConfig struct {
	log      hclog.Logger
	rt       runtime.Runtime
	rep      *reporter
	node     string // this worker's name, put on its containers
	bindAddr string
	logDir   string

	// conns counts the open ingress connections to a task; nil counts
	// none.
	conns func(taskID string) int
}

// runner owns the task map. Its goroutine reacts to assignment lists,
// container exits, finished operations and health results, one at a time;
// everything slow runs in goroutines that send their result back.
type runner struct {
	runnerConfig

	tasks  map[string]*taskState
	synced bool     // the first assignment list arrived
	pos    position // the position of the latest list applied

	ctx    context.Context
	wg     sync.WaitGroup
	done   chan opResult
	health chan healthResult
	poke   chan string

	// startSlots holds one token per start running; its capacity is
	// maxStarts.
	startSlots chan struct{}
}

// newRunner records the containers found at start; they are left alone
// until the first assignment list arrives.
func newRunner(cfg runnerConfig, existing []runtime.Container) *runner {
	r := &runner{
		runnerConfig: cfg,
		tasks:        make(map[string]*taskState),
		done:         make(chan opResult),
		health:       make(chan healthResult),
		poke:         make(chan string),
		startSlots:   make(chan struct{}, maxStarts),
	}
	for _, c := range existing {
		st := r.newState(c.ID)
		st.container = true
		st.running = c.Running
		st.exitCode = int32(c.ExitCode)
		r.tasks[c.ID] = st
	}
	if len(existing) > 0 {
		r.log.Info("found containers; waiting for assignments before "+
			"touching them", "count", len(existing))
	}
	return r
}

func (r *runner) newState(id string) *taskState {
	return &taskState{id: id, log: r.log.With("task_id", id)}
}

// run is the runner's loop. It returns when ctx is done, after every
// operation and health checker it started has ended.
func (r *runner) run(ctx context.Context, assign <-chan assignment) {
	r.ctx = ctx
	defer r.wg.Wait()

	exits := r.rt.Exits()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-assign:
			r.onAssign(a)
		case e, ok := <-exits:
			if !ok {
				r.log.Error("runtime closed its exit stream")
				exits = nil
				continue
			}
			r.onExit(e)
		case res := <-r.done:
			r.onDone(res)
		case h := <-r.health:
			r.onHealth(h)
		case id := <-r.poke:
			if st, ok := r.tasks[id]; ok {
				st.retryArmed = false
				r.step(st)
			}
		}
	}
}

// onAssign applies a full list of this node's tasks.
func (r *runner) onAssign(a assignment) {
	if a.pos.index == 0 {
		// A manager that has applied nothing yet knows no tasks; its
		// empty list must not remove what runs.
		r.log.Debug("ignoring assignments of an empty replica")
		return
	}
	// TODO: persist the highest index seen in DataDir so that a restarted
	// agent also refuses a list older than the one it last applied.
	if a.pos.before(r.pos) {
		// A manager whose replica lags behind the one heard before:
		// its list would undo newer decisions.
		r.log.Debug("ignoring stale assignments", "index", a.pos.index,
			"restore_epoch", a.pos.epoch, "seen", r.pos.index,
			"seen_restore_epoch", r.pos.epoch)
		return
	}
	switch {
	case !r.synced:
		r.log.Info("first assignments received", "tasks", len(a.tasks))
	case a.pos.epoch > r.pos.epoch:
		// What runs here that the restored state does not list is
		// stopped now; what it lists is adopted or started.
		r.log.Info("assignments of a restored state received; reconciling to them",
			"tasks", len(a.tasks), "restore_epoch", a.pos.epoch, "index", a.pos.index)
	}
	r.pos = a.pos
	r.synced = true

	listed := make(map[string]bool, len(a.tasks))
	for _, t := range a.tasks {
		listed[t.GetId()] = true
		st, ok := r.tasks[t.GetId()]
		if !ok {
			st = r.newState(t.GetId())
			r.tasks[t.GetId()] = st
		}
		if st.task == nil {
			st.log = st.log.With("app", t.GetApp())
		}
		st.task = t
	}
	ids := make([]string, 0, len(r.tasks))
	for id, st := range r.tasks {
		if !listed[id] {
			st.task = nil
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)

	// The starts that step cancels are cancelled here first, all at
	// once: stepping a long list takes a while, and a start cancelled
	// late in it could free its slot for a queued start of the same
	// list that is to be cancelled too.
	for _, st := range r.tasks {
		r.stopStart(st)
	}
	for _, id := range ids {
		r.step(r.tasks[id])
	}
}

// step moves one task towards what its assignment wants. It does nothing
// before the first assignment list, while an operation is in flight or
// while a failed teardown waits for its retry; the operation's end or
// the retry steps the task again.
//
// A start in flight of a task desired stop or no longer assigned is
// cancelled (stopStart): one still waiting for a slot ends at once
// without reaching the runtime, one that got its slot ends before its
// next runtime call, and a Pull or Start already running is let finish,
// since containerd leaks what a cancelled call was making. The start's
// result then finishes the task as a stop (abortStart), so that an app
// removed while its replicas start does not wait for all of them to
// pull and start.
func (r *runner) step(st *taskState) {
	if !r.synced {
		return
	}
	r.stopStart(st)
	if st.op == opDrain && st.task.GetDesired() == pb.DesiredRun {
		// Desired run again (a snapshot restore during a rollout) while
		// the drain wait runs: end the wait now. Its result then steps
		// the task, and stepRun brings it back to running.
		r.abandonDrain(st)
	}
	if st.op != opNone || st.retryArmed {
		return
	}
	t := st.task
	switch {
	case t == nil:
		r.stopHealth(st)
		if st.container {
			r.rep.forget(st.id)
			r.teardown(st)
			return
		}
		r.rep.forget(st.id)
		delete(r.tasks, st.id)

	case t.GetDesired() == pb.DesiredStop:
		r.stepStop(st)

	default:
		r.stepRun(st)
	}
}

// stepStop handles a task whose desired state is stop. A running task
// drains first: it is reported draining and keeps serving until the
// leader has seen every ingress take it out of rotation, then it keeps
// running for drain_timeout so that open connections can end; only then
// is it stopped.
// A task whose container has exited is just removed.
func (r *runner) stepStop(st *taskState) {
	r.stopHealth(st)
	if st.running && !st.drained {
		switch st.state {
		case "":
			// Adopted at restart: watch it so that an exit during
			// the drain is seen, then carry on from here.
			st.log.Info("adopting running container to drain it")
			st.resumeHealthy = st.task.GetHealthy()
			r.set(st, pb.TaskDraining, "")
			r.watchContainer(st)
			return
		case pb.TaskDraining:
		default:
			st.resumeHealthy = st.healthy
			r.set(st, pb.TaskDraining, "")
		}
		if st.task.GetOutOfRotation() {
			r.drain(st)
		}
		return
	}

	if st.container {
		r.teardown(st)
		return
	}
	if st.state != pb.TaskFailed && st.state != pb.TaskStopped {
		r.set(st, pb.TaskStopped, "")
	}
}

// drain keeps st running for its drain_timeout after it left rotation,
// or until its container exits. It does not end when this worker's own
// ingress has no connection left: requests that other workers' ingress
// or DNS clients sent to the task before it left their rotation are not
// seen here, and they are promised drain_timeout too.
func (r *runner) drain(st *taskState) {
	timeout := drainTimeout(st.task)
	st.log.Info("out of rotation, draining open connections",
		"drain_timeout", timeout)

	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	st.stopDrain = cancel
	id, conns := st.id, r.conns
	r.spawn(st, opDrain, func(context.Context) opResult {
		defer cancel()
		<-ctx.Done()
		n := 0
		if conns != nil {
			n = conns(id)
		}
		if n > 0 {
			return opResult{stage: "drain",
				err: fmt.Errorf("%d connections through this worker's "+
					"ingress still open: %w", n, ctx.Err())}
		}
		return opResult{}
	})
}

// stepRun handles a task whose desired state is run.
func (r *runner) stepRun(st *taskState) {
	switch {
	case st.state == pb.TaskFailed || st.state == pb.TaskStopped:
		// Never restarted here: the leader places a replacement.
	case st.state == pb.TaskDraining:
		// Desired run again before its stop began (a snapshot restore
		// during a rollout brought back the task): step never gets
		// here while the drain wait is in flight, so it is over or
		// abandoned and nothing is left that would stop the container.
		r.undrain(st)
	case st.state == pb.TaskStopping:
		// The stop began (the container got its signal) and a retry
		// of a failed teardown brought the task here: a signalled
		// container cannot be taken back, so the teardown is finished
		// and the task reported stopped; the leader replaces it.
		if st.container {
			r.teardown(st)
		} else {
			r.set(st, pb.TaskStopped, "")
		}
	case st.container && st.state == "" && st.running:
		r.adopt(st)
	case st.container && st.state == "":
		r.fail(st, st.exitCode)
	case !st.container && st.state == "":
		r.startOrRecover(st)
	}
}

// abandonDrain cancels the drain wait of a task desired run again. The
// wait's result still comes back through onDone, which then leaves the
// task undrained and steps it.
func (r *runner) abandonDrain(st *taskState) {
	if st.drainAbandoned {
		return
	}
	st.log.Info("desired run again while draining; abandoning the drain")
	st.drainAbandoned = true
	if st.stopDrain != nil {
		st.stopDrain()
		st.stopDrain = nil
	}
}

// undrain brings a draining task, desired run again, back to running:
// its container never got a stop signal. It is reported running with the
// health it had when the drain began (the leader's view for a container
// adopted to drain), so that the leader puts it back in rotation and a
// task it saw healthy does not read as failed; its checks start again at
// once. A container that exited meanwhile is a failed task like any
// other.
func (r *runner) undrain(st *taskState) {
	st.drained = false
	switch {
	case st.running:
		st.log.Info("back to running after an abandoned drain")
		r.markRunning(st, st.resumeHealthy)
	case st.container:
		r.fail(st, st.exitCode)
	default:
		st.log.Warn("container of a draining task is gone")
		st.exitCode = runtime.UnknownExitCode
		r.set(st, pb.TaskFailed, "container lost")
	}
}

// stopStart cancels, once, the start in flight of a task desired stop or
// no longer assigned: see start for what that stops. The start's result
// still comes back through onDone, which tears down whatever it made
// (abortStart).
func (r *runner) stopStart(st *taskState) {
	if st.op != opStart || st.startCancelled || st.task.GetDesired() == pb.DesiredRun {
		return
	}
	why := "desired stop"
	if st.task == nil {
		why = "no longer assigned"
	}
	st.log.Info("cancelling start", "reason", why)
	st.startCancelled = true
	st.cancelStart()
}

// startOrRecover starts a task this agent has no record of, unless the
// leader's copy shows it ran before: then the agent restarted and lost
// the container (or never had one, after a failed pull), and restarting
// it here would break the rule that only the leader replaces tasks.
func (r *runner) startOrRecover(st *taskState) {
	t := st.task
	switch t.GetState() {
	case "", pb.TaskPending:
		r.start(st)
	case pb.TaskFailed, pb.TaskStopped:
		st.exitCode = t.GetExitCode()
		r.set(st, t.GetState(), t.GetMessage())
	default:
		st.log.Warn("container of a started task is gone",
			"state", t.GetState())
		st.exitCode = runtime.UnknownExitCode
		r.set(st, pb.TaskFailed, "container lost")
	}
}

// start pulls the image and starts the task's container, once one of
// the maxStarts slots is free; the task is pending until then.
//
// The start has its own context, which stopStart cancels. It ends the
// wait for a slot and is checked before the pull and again before the
// start, but the runtime calls never get it: Start runs with a context
// that nothing cancels, not stopStart and not the agent's shutdown, and
// Pull with the agent's own.
// containerd's client leaks what a call cut short was making (a
// container record without its task, a snapshot, a shim, a lease kept
// for a day), and the runner's teardown cannot see what appears after
// it ran. A start cancelled during its Pull or Start thus completes,
// and abortStart tears down the container it made. The agent's shutdown
// waits for the Starts in flight (at most maxStarts) and leaves their
// containers running like the others, for the next agent to adopt.
func (r *runner) start(st *taskState) {
	t := st.task
	spec := containerSpec(t, r.node, r.bindAddr, r.logDir)
	r.set(st, pb.TaskPending, "")
	ctx, cancel := context.WithCancel(r.ctx)
	st.cancelStart = cancel
	slots := r.startSlots
	r.spawn(st, opStart, func(context.Context) opResult {
		defer cancel()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return opResult{stage: "wait", err: ctx.Err()}
		}
		defer func() { <-slots }()
		if err := ctx.Err(); err != nil {
			// Cancelled while the slot came free.
			return opResult{stage: "wait", err: err}
		}
		// A pull ends with the agent, though: a registry that hangs
		// must not hold the agent's shutdown, and what a pull cut
		// short leaves is content containerd collects.
		if err := r.rt.Pull(r.ctx, spec.Image); err != nil {
			return opResult{stage: "pull", err: err}
		}
		if err := ctx.Err(); err != nil {
			// Cancelled during the pull: nothing to start.
			return opResult{stage: "wait", err: err}
		}
		if err := r.rt.Start(context.WithoutCancel(ctx), spec); err != nil {
			return opResult{stage: "start", err: err}
		}
		return opResult{at: time.Now()}
	})
}

// adopt takes over a container that ran before the agent restarted.
func (r *runner) adopt(st *taskState) {
	st.log.Info("adopting running container",
		"healthy", st.task.GetHealthy())

	// The runtime does not say when the container started; counting the
	// start period from now gives checks the same grace as a fresh start.
	st.startedAt = time.Now()

	// Its health is the leader's until a check says otherwise: to the
	// leader, a healthy task reported unhealthy has failed, and a
	// restart alone must not fail a rollout.
	r.markRunning(st, st.task.GetHealthy())
	r.watchContainer(st)
}

// watchContainer asks the runtime to report the exit of an adopted
// container.
func (r *runner) watchContainer(st *taskState) {
	id := st.id
	r.spawn(st, opWatch, func(ctx context.Context) opResult {
		if err := r.rt.Watch(ctx, id); err != nil {
			return opResult{stage: "watch", err: err}
		}
		return opResult{}
	})
}

// teardown stops the container if it runs, then removes it.
func (r *runner) teardown(st *taskState) {
	if st.task != nil && st.state != pb.TaskFailed &&
		st.state != pb.TaskStopped {
		r.set(st, pb.TaskStopping, "")
	}
	timeout := stopTimeout(st.task)
	running := st.running
	r.spawn(st, opTeardown, func(ctx context.Context) opResult {
		if running {
			if err := r.rt.Stop(ctx, st.id, timeout); err != nil {
				return opResult{stage: "stop", err: err}
			}
		}
		if err := r.rt.Remove(ctx, st.id); err != nil {
			return opResult{stage: "remove", err: err}
		}
		return opResult{}
	})
}

// spawn runs f outside the runner and sends its result back.
func (r *runner) spawn(st *taskState, kind opKind,
	f func(context.Context) opResult) {
	st.op = kind
	id := st.id
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		res := f(r.ctx)
		res.id, res.kind = id, kind
		select {
		case r.done <- res:
		case <-r.ctx.Done():
		}
	}()
}

// onDone applies the result of an operation.
func (r *runner) onDone(res opResult) {
	st, ok := r.tasks[res.id]
	if !ok || st.op != res.kind {
		return
	}
	st.op = opNone

	switch res.kind {
	case opStart:
		r.started(st, res)
	case opTeardown:
		r.tornDown(st, res)
	case opWatch:
		if res.err != nil && st.task.GetDesired() == pb.DesiredRun {
			// Without a watch an exit would go unnoticed; report the
			// task failed so that the leader replaces it.
			st.log.Warn("cannot watch container", "error", res.err)
			r.stopHealth(st)
			r.set(st, pb.TaskFailed, "watch container: "+res.err.Error())
		} else if res.err != nil {
			// A task being stopped goes on to its stop all the same.
			st.log.Warn("cannot watch container", "error", res.err)
		}
	case opDrain:
		st.stopDrain = nil
		if st.drainAbandoned {
			// Cancelled because the task is desired run again: it is
			// not drained, whatever the wait returned. If it is
			// desired stop once more by now, it drains afresh.
			st.drainAbandoned = false
			break
		}
		st.drained = true
		if res.err != nil && st.running {
			st.log.Info("drain timeout passed", "error", res.err)
		}
	}
	r.step(st)
}

func (r *runner) started(st *taskState, res opResult) {
	cancelled := st.startCancelled
	st.cancelStart, st.startCancelled = nil, false
	if cancelled && (res.err != nil || st.task.GetDesired() != pb.DesiredRun) {
		// A start cancelled during its Pull or Start completes; if the
		// task is desired run again by then, its container is kept,
		// as if the start had not been cancelled.
		r.abortStart(st, res)
		return
	}
	if res.err != nil {
		msg := "start: " + res.err.Error()
		if res.stage == "pull" {
			msg = fmt.Sprintf("pull %s: %v", st.task.GetSpec().GetImage(),
				res.err)
		}
		// A start that failed in the runtime's Start may have left a
		// container (or its task) behind, for instance when the
		// runtime's own cleanup of the half made container failed: it
		// is recorded, so that the task's teardown removes it once
		// the task is desired stop or unassigned. Removing a missing
		// container is no error.
		st.container = leftContainer(res)
		st.pendingExit = nil
		st.log.Warn("task failed to start", "error", msg)
		r.set(st, pb.TaskFailed, msg)
		return
	}
	st.container, st.running, st.startedAt = true, true, res.at
	st.retries = 0
	r.markRunning(st, false)
	if e := st.pendingExit; e != nil {
		st.pendingExit = nil
		r.onExit(*e)
	}
}

// abortStart finishes a start cancelled by stopStart as a stop: what the
// start made (the container of a Start that was running when the start
// was cancelled, and so completed, or whatever a Start that failed on
// its own left, see leftContainer) is recorded, so that the step that
// follows tears it down, and the task is reported stopping, then
// stopped, or stopped at once when nothing was made (cancelled before
// Start). A task never reported running was never in rotation: it has
// nothing to drain.
func (r *runner) abortStart(st *taskState, res opResult) {
	switch {
	case res.err == nil:
		st.container, st.running, st.startedAt = true, true, res.at
	case leftContainer(res):
		st.container = true
	}
	if e := st.pendingExit; e != nil {
		st.running, st.exitCode = false, int32(e.Code)
	}
	st.pendingExit = nil
	st.drained = true
	st.log.Info("start cancelled", "stage", res.stage,
		"container_left", st.container, "error", res.err)
	if st.task == nil || st.state == pb.TaskFailed ||
		st.state == pb.TaskStopped {
		return
	}
	if st.container {
		r.set(st, pb.TaskStopping, "")
	} else {
		r.set(st, pb.TaskStopped, "")
	}
}

// leftContainer tells whether a failed start may have left a container
// behind: one that failed in the runtime's Start, except when a container
// of that ID was there already, which Start leaves alone and so does the
// runner.
func leftContainer(res opResult) bool {
	return res.stage == "start" && !errors.Is(res.err, runtime.ErrExists)
}

func (r *runner) tornDown(st *taskState, res opResult) {
	if res.err == nil {
		if st.retries > 0 {
			st.log.Info("container teardown succeeded after retries",
				"failures", st.retries)
		}
		st.container, st.running, st.retries = false, false, 0
		if st.task != nil && st.state == pb.TaskStopping {
			r.set(st, pb.TaskStopped, "")
		}
		return
	}

	// One line per retry, and only the first at warn: a containerd that
	// is down fails every try the same way.
	log := st.log.Debug
	if st.retries == 0 {
		log = st.log.Warn
	}
	log("container teardown failed, will retry", "stage", res.stage,
		"error", res.err, "retry_in", retryDelay(st.retries),
		"failures", st.retries+1)
	if res.stage == "remove" {
		// The stop worked: the task is stopped even though its
		// container is still there to be removed.
		st.running = false
		if st.task != nil && st.state == pb.TaskStopping {
			r.set(st, pb.TaskStopped, "")
		}
	} else if st.task != nil {
		r.set(st, st.state, res.stage+": "+res.err.Error())
	}
	r.retryLater(st)
}

// retryLater steps st again after a growing delay; step leaves st
// alone until then.
func (r *runner) retryLater(st *taskState) {
	if st.retryArmed {
		return
	}
	st.retryArmed = true
	d := retryDelay(st.retries)
	st.retries++
	id := st.id
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if !sleepCtx(r.ctx, d) {
			return
		}
		select {
		case r.poke <- id:
		case <-r.ctx.Done():
		}
	}()
}

// retryDelay is the wait before the retry that follows the given number
// of earlier failures in a row: minRetryDelay doubling to maxRetryDelay.
func retryDelay(failures int) time.Duration {
	return min(minRetryDelay<<min(failures, 10), maxRetryDelay)
}

// onExit applies a container exit.
func (r *runner) onExit(e runtime.Exit) {
	st, ok := r.tasks[e.ID]
	if !ok {
		return
	}
	if st.op == opStart {
		st.pendingExit = &e
		return
	}
	st.running = false
	st.exitCode = int32(e.Code)
	r.stopHealth(st)
	if st.stopDrain != nil {
		st.stopDrain() // nothing is left to drain
	}

	// Before the first assignments the exit is only recorded; during a
	// teardown it is expected. A task draining towards its stop has
	// nothing left to wait for: it is removed.
	if st.state == "" || st.op == opTeardown || st.task == nil {
		return
	}
	if st.task.GetDesired() != pb.DesiredRun {
		r.step(st)
		return
	}
	if st.state == pb.TaskRunning || st.state == pb.TaskPending ||
		st.state == pb.TaskStarting {
		r.fail(st, int32(e.Code))
	}
}

// onHealth applies a health check result of the current checker.
func (r *runner) onHealth(h healthResult) {
	st, ok := r.tasks[h.id]
	if !ok || h.gen != st.checkGen || st.state != pb.TaskRunning {
		return
	}
	if h.healthy != st.healthy {
		st.log.Info("health changed", "healthy", h.healthy,
			"message", h.message)
	}
	st.healthy = h.healthy
	st.message = h.message
	r.publish(st)
}

// markRunning marks st running and starts its health checks. A task
// without checks is healthy as soon as it runs; one with checks starts
// from healthy (false for a container just started, the leader's view
// for an adopted one) and changes only when a check result arrives.
func (r *runner) markRunning(st *taskState, healthy bool) {
	st.state = pb.TaskRunning
	st.message = ""
	st.exitCode = 0
	hs := st.task.GetSpec().GetHealth()
	checked := hs.GetHttp() != nil || hs.GetTcp() != nil
	st.healthy = healthy || !checked
	r.publish(st)
	if checked {
		r.startHealth(st, hs)
	}
}

func (r *runner) fail(st *taskState, code int32) {
	st.exitCode = code
	msg := fmt.Sprintf("exited with code %d", code)
	if code == runtime.UnknownExitCode {
		msg = "exited; its exit code was lost with its task"
	}
	r.set(st, pb.TaskFailed, msg)
}

// set changes the state and message; only a running task can be healthy.
func (r *runner) set(st *taskState, state, message string) {
	st.state = state
	st.message = message
	if state != pb.TaskRunning {
		st.healthy = false
	}
	r.publish(st)
}

// publish hands the task's report to the reporter if it changed.
func (r *runner) publish(st *taskState) {
	rep := &pb.TaskReport{
		TaskId:  st.id,
		State:   st.state,
		Healthy: st.healthy,
		Message: st.message,
	}
	if st.state == pb.TaskFailed {
		rep.ExitCode = st.exitCode
	}
	if proto.Equal(rep, st.published) {
		return
	}
	if st.published == nil || st.published.GetState() != st.state {
		st.log.Info("task state", "state", st.state, "message", st.message)
	}
	st.published = rep
	r.rep.update(rep)
}

// startHealth starts a checker for st; its results carry a generation so
// that a stopped checker's last result is ignored.
func (r *runner) startHealth(st *taskState, hs *pb.HealthSpec) {
	r.stopHealth(st)
	st.checkGen++
	gen, id := st.checkGen, st.id
	c := newChecker(st.task, hs, r.bindAddr, st.startedAt)

	ctx, cancel := context.WithCancel(r.ctx)
	st.stopCheck = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.run(ctx, func(healthy bool, msg string) {
			select {
			case r.health <- healthResult{id, gen, healthy, msg}:
			case <-ctx.Done():
			}
		})
	}()
}

func (r *runner) stopHealth(st *taskState) {
	if st.stopCheck != nil {
		st.stopCheck()
		st.stopCheck = nil
	}
}

// drainTimeout is the task's drain_timeout; zero waits for nothing.
func drainTimeout(t *pb.Task) time.Duration {
	return max(time.Duration(t.GetSpec().GetUpdate().GetDrainTimeout()), 0)
}

// stopTimeout is the task's stop_timeout, or the default.
func stopTimeout(t *pb.Task) time.Duration {
	if d := time.Duration(t.GetSpec().GetUpdate().GetStopTimeout()); d > 0 {
		return d
	}
	return defaultStopTimeout
}
