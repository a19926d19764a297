package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/rpc"
	"github.com/hivemind-orch/hivemind/rpc/pb"
	"github.com/hivemind-orch/hivemind/spec"
)

// TestLinearizable's cluster and workload.
const (
	linSubnet = 23
	linChain  = "HM-TEST-23"
	// linGIDBase + i is the group ID manager mi runs under, so that the
	// firewall can tell the connections it dials apart.
	linGIDBase = 42300

	linKeys    = 3 // registers: apps lin-0 .. lin-2
	linClients = 6
	// linOpTimeout bounds one operation; one without an answer by then
	// has an unknown outcome.
	linOpTimeout = 2 * time.Second
	// linMinRun is how long the workload runs at least: fault cycles go
	// on until it has passed (at most linMaxCycles of them).
	linMinRun    = 30 * time.Second
	linMaxCycles = 4
	// linProgress is how many operations must complete after a fault's
	// new leader is known before the fault moves on.
	linProgress = 20
	// linReadsWaiting is how many reads must wait at a frozen leader
	// when it thaws: each races the leader's lease check.
	linReadsWaiting = 3
)

// Issue 4, operations and faults: six clients read and write three
// registers (the replicas of apps lin-0..lin-2: a write is `app scale`, a
// read `app status`) through the gRPC Control API of random managers,
// followers forwarding, while the leader is killed and restarted,
// partitioned from the other managers and healed, frozen (SIGSTOP) until
// the others have moved on and thawed, and made to hand leadership over. Porcupine checks the recorded history against a
// register per key: no acknowledged write is lost and no read goes back
// in time. An operation that failed or timed out may or may not have
// happened; the model allows both.
func TestLinearizable(t *testing.T) {
	t.Parallel()
	t.Run("checker rejects histories that are not linearizable", testRegisterModel)

	fw, removeFirewall := newFirewall(t, linChain)

	gids := map[string]int{}
	for i := 1; i <= 3; i++ {
		gids[fmt.Sprintf("m%d", i)] = linGIDBase + i
	}
	bin, err := cluster.GroupWrapper(t.TempDir(), binary, gids)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(cluster.Config{
		Binary:   bin,
		Managers: 3,
		Subnet:   linSubnet,
		Log:      harnessLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeFirewall()
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	onFailure(t, c)

	for k := range linKeys {
		deploy(t, c, cluster.WebApp{Name: linApp(k), Image: c.Image("v1")}.YAML())
	}
	ctl := dialManagers(t, c)
	w := newLinWorkload(ctl)
	w.start()
	t.Cleanup(w.stop) // runs before the cluster stops
	w.waitProgress(t, 0, 2*linProgress, "the workload runs before any fault")
	warmup := w.elapsed()

	f := &linFaults{t: t, c: c, fw: fw, gids: gids, ctl: ctl, w: w}
	for cycle := 1; cycle <= linMaxCycles && (cycle == 1 || w.elapsed() < linMinRun); cycle++ {
		f.killLeader()
		f.partitionLeader()
		f.pauseLeader()
		f.transferLeadership()
	}
	w.stop()
	t.Logf("workload ran %s with %d fault(s)", w.elapsed().Round(time.Millisecond), len(f.done))

	w.finalReads(t)
	ops := w.history()
	s := summarise(ops, warmup)
	t.Logf("operations: %s", s)
	if s.acked < 50 || s.read < 50 {
		t.Errorf("only %d acknowledged writes and %d answered reads: too few to tell anything", s.acked, s.read)
	}
	for _, fl := range f.done {
		n, answered := attemptedDuring(ops, fl)
		t.Logf("fault %s [%s, %s]: %d operations attempted, %d answered",
			fl.name, fl.start.Round(time.Millisecond), fl.end.Round(time.Millisecond), n, answered)
		if n == 0 {
			t.Errorf("no operation was attempted during fault %s", fl.name)
		}
	}
	checkFinalValues(t, ops)
	checkNoStaleReads(t, ops)
	checkLinearizable(t, ops, f.done)
}

func linApp(key int) string { return fmt.Sprintf("lin-%d", key) }

// dialManagers returns a Control client per manager, by name.
func dialManagers(t *testing.T, c *cluster.Cluster) map[string]pb.ControlClient {
	t.Helper()
	out := map[string]pb.ControlClient{}
	for _, m := range c.Managers() {
		cc, err := rpc.Dial(m.RPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		out[m.Name] = pb.NewControlClient(cc)
	}
	return out
}

// linInput is an operation on one register: a write of value, or a read.
type linInput struct {
	key   int
	write bool
	value int64
}

// linOutput is an answer: the value a read returned, or NotFound.
type linOutput struct {
	value    int64
	notFound bool
}

// linOp is one recorded operation. Times are since the workload started.
type linOp struct {
	client    int
	via       string // the manager it was sent to
	in        linInput
	out       linOutput
	call, ret time.Duration
	answered  bool  // the server answered (a write: acknowledged)
	err       error // why not, when !answered
}

// unknown reports whether the op's outcome is unknown: a write that got
// no answer may have been applied or not.
func (o linOp) unknown() bool { return o.in.write && !o.answered }

// linWorkload runs the clients and records their operations.
type linWorkload struct {
	ctl    map[string]pb.ControlClient
	via    []string
	values [linKeys]atomic.Int64 // the last value handed out per key

	t0       time.Time
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	ops      []linOp
	seq      int
	inFlight map[int]linOp // sent, not answered yet, by sequence number
}

func newLinWorkload(ctl map[string]pb.ControlClient) *linWorkload {
	w := &linWorkload{ctl: ctl, stopping: make(chan struct{}), inFlight: map[int]linOp{}}
	for name := range ctl {
		w.via = append(w.via, name)
	}
	sort.Strings(w.via)
	return w
}

func (w *linWorkload) elapsed() time.Duration { return time.Since(w.t0) }

func (w *linWorkload) start() {
	w.t0 = time.Now()
	for id := range linClients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.client(id)
		}()
	}
}

// stop ends the clients and waits for their last operations. Idempotent.
func (w *linWorkload) stop() {
	w.stopOnce.Do(func() { close(w.stopping) })
	w.wg.Wait()
}

// client runs random operations on random keys through random managers
// until stop.
func (w *linWorkload) client(id int) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	for {
		key := rng.IntN(linKeys)
		via := w.via[rng.IntN(len(w.via))]
		in := linInput{key: key}
		if rng.IntN(2) == 0 {
			if v := w.values[key].Add(1); v <= spec.MaxReplicas {
				in.write, in.value = true, v
			}
		}
		w.record(w.do(id, via, in))

		// Pacing, not synchronisation: about 15 operations a second
		// per client.
		select {
		case <-w.stopping:
			return
		case <-time.After(time.Duration(30+rng.IntN(40)) * time.Millisecond):
		}
	}
}

// do runs one operation and returns its record.
func (w *linWorkload) do(id int, via string, in linInput) linOp {
	op := linOp{client: id, via: via, in: in}
	ctx, cancel := context.WithTimeout(context.Background(), linOpTimeout)
	defer cancel()
	name := linApp(in.key)

	op.call = w.elapsed()
	done := w.sent(op)
	var err error
	if in.write {
		_, err = w.ctl[via].ScaleApp(ctx, &pb.ScaleAppRequest{Name: name, Replicas: int32(in.value)})
	} else {
		var resp *pb.AppStatusResponse
		resp, err = w.ctl[via].AppStatus(ctx, &pb.AppStatusRequest{Name: name})
		if err == nil {
			app := resp.GetApp()
			op.out.value = int64(fsm.SpecOf(app, app.GetVersion()).GetReplicas())
		}
	}
	op.ret = w.elapsed()
	done()

	switch {
	case err == nil:
		op.answered = true
	case status.Code(err) == codes.NotFound:
		// A definite answer, and a wrong one: every app exists from
		// before the first operation to after the last.
		op.answered, op.out.notFound = true, true
	default:
		op.err = err
	}
	return op
}

// sent notes op as in flight until the returned function is called.
func (w *linWorkload) sent(op linOp) (done func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	id := w.seq
	w.inFlight[id] = op
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.inFlight, id)
	}
}

// readsWaiting counts the reads in flight to via called at or after
// since.
func (w *linWorkload) readsWaiting(via string, since time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, op := range w.inFlight {
		if op.via == via && !op.in.write && op.call >= since {
			n++
		}
	}
	return n
}

// outcomes describes the reads sent to via called in [from, to]: how
// many were answered, and the errors of the others.
func (w *linWorkload) outcomes(via string, from, to time.Duration) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	answered, errs := 0, map[string]int{}
	for _, op := range w.ops {
		if op.via != via || op.in.write || op.call < from || op.call > to {
			continue
		}
		if op.answered {
			answered++
		} else {
			errs[status.Convert(op.err).Message()]++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "of the reads sent to %s meanwhile, %d answered", via, answered)
	for msg, n := range errs {
		fmt.Fprintf(&b, ", %d refused with %q", n, msg)
	}
	return b.String()
}

func (w *linWorkload) record(op linOp) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ops = append(w.ops, op)
}

// history returns a copy of the operations recorded so far.
func (w *linWorkload) history() []linOp {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ops)
}

// answeredSince counts the operations answered that were called at or
// after since, and those among them sent to via (any manager if "").
func (w *linWorkload) answeredSince(since time.Duration, via string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, op := range w.ops {
		if op.answered && op.call >= since && (via == "" || op.via == via) {
			n++
		}
	}
	return n
}

// attemptedSince counts the operations sent to via called at or after
// since, answered or not.
func (w *linWorkload) attemptedSince(since time.Duration, via string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, op := range w.ops {
		if op.call >= since && op.via == via {
			n++
		}
	}
	return n
}

// waitProgress waits until n operations called after since were
// answered.
func (w *linWorkload) waitProgress(t *testing.T, since time.Duration, n int, what string) {
	t.Helper()
	wait(t, 60*time.Second, what, func() error {
		if got := w.answeredSince(since, ""); got < n {
			return fmt.Errorf("%d operations answered since %s, want %d",
				got, since.Round(time.Millisecond), n)
		}
		return nil
	})
}

// finalReads reads every key through every manager once the workload has
// stopped and the faults are healed, and records the reads: they end the
// history.
func (w *linWorkload) finalReads(t *testing.T) {
	t.Helper()
	for k := range linKeys {
		for _, via := range w.via {
			wait(t, 30*time.Second, fmt.Sprintf("final read of %s through %s", linApp(k), via), func() error {
				op := w.do(linClients, via, linInput{key: k})
				if !op.answered {
					return op.err
				}
				w.record(op)
				return nil
			})
		}
	}
}

// linSummary counts a history's operations.
type linSummary struct {
	acked, unknown, read, readFailed int
	codes                            map[codes.Code]int
	readLatency, warmupReadLatency   []time.Duration
}

func summarise(ops []linOp, warmup time.Duration) linSummary {
	s := linSummary{codes: map[codes.Code]int{}}
	for _, op := range ops {
		switch {
		case op.in.write && op.answered:
			s.acked++
		case op.in.write:
			s.unknown++
		case op.answered:
			s.read++
			s.readLatency = append(s.readLatency, op.ret-op.call)
			if op.ret <= warmup {
				s.warmupReadLatency = append(s.warmupReadLatency, op.ret-op.call)
			}
		default:
			s.readFailed++
		}
		if op.err != nil {
			s.codes[status.Code(op.err)]++
		}
	}
	return s
}

func (s linSummary) String() string {
	var errs []string
	for code, n := range s.codes {
		errs = append(errs, fmt.Sprintf("%s %d", code, n))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d acknowledged writes, %d writes with unknown outcome, "+
		"%d answered reads, %d failed reads (errors: %s); read latency p50/p99 "+
		"%s/%s before the first fault, %s/%s overall",
		s.acked, s.unknown, s.read, s.readFailed, strings.Join(errs, ", "),
		pct(s.warmupReadLatency, 50), pct(s.warmupReadLatency, 99),
		pct(s.readLatency, 50), pct(s.readLatency, 99))
}

// pct is the p-th percentile of ds, rounded for a log line.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(10 * time.Microsecond)
}

// linFault is one fault injected, in workload time.
type linFault struct {
	name       string
	start, end time.Duration
	detail     string
}

// attemptedDuring counts the operations called during f, and those of
// them answered.
func attemptedDuring(ops []linOp, f linFault) (n, answered int) {
	for _, op := range ops {
		if op.call >= f.start && op.call <= f.end {
			n++
			if op.answered {
				answered++
			}
		}
	}
	return n, answered
}

// linFaults injects the faults and records them.
type linFaults struct {
	t    *testing.T
	c    *cluster.Cluster
	fw   *cluster.Firewall
	gids map[string]int
	ctl  map[string]pb.ControlClient
	w    *linWorkload
	done []linFault
}

// viewOf asks manager for its cluster status: the leader it knows and
// its own Raft state.
func (f *linFaults) viewOf(manager string) (leader, state string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := f.ctl[manager].ClusterStatus(ctx, &pb.ClusterStatusRequest{})
	if err != nil {
		return "", "", fmt.Errorf("cluster status at %s: %w", manager, err)
	}
	for _, m := range st.GetManagers() {
		if m.GetName() == manager {
			state = m.GetState()
		}
	}
	return st.GetLeader(), state, nil
}

// agreedLeader waits until every manager of among names the same leader,
// other than not, and that leader says it leads; it returns its name.
func (f *linFaults) agreedLeader(among []string, not, what string) string {
	f.t.Helper()
	var leader string
	wait(f.t, 60*time.Second, what, func() error {
		leader = ""
		for _, m := range among {
			l, state, err := f.viewOf(m)
			switch {
			case err != nil:
				return err
			case l == "" || l == not:
				return fmt.Errorf("%s (%s) sees leader %q", m, state, l)
			case leader != "" && l != leader:
				return fmt.Errorf("%s sees leader %s, others %s", m, l, leader)
			case m == l && state != "leader":
				return fmt.Errorf("%s is named leader but is %s", m, state)
			}
			leader = l
		}
		if !slices.Contains(among, leader) {
			return fmt.Errorf("leader %s is not among %v", leader, among)
		}
		return nil
	})
	return leader
}

func (f *linFaults) all() []string { return f.w.via }

func (f *linFaults) others(name string) []string {
	var out []string
	for _, m := range f.all() {
		if m != name {
			out = append(out, m)
		}
	}
	return out
}

// record ends a fault that started at start.
func (f *linFaults) record(name string, start time.Duration, detail string) {
	fl := linFault{name: name, start: start, end: f.w.elapsed(), detail: detail}
	f.done = append(f.done, fl)
	f.t.Logf("fault %s from %s to %s: %s", name, start.Round(time.Millisecond),
		fl.end.Round(time.Millisecond), detail)
}

// killLeader kills the leader with SIGKILL, waits for the others to
// elect another and serve, restarts it and waits for it to follow.
func (f *linFaults) killLeader() {
	t := f.t
	old := f.agreedLeader(f.all(), "", "one leader before the kill")
	start := f.w.elapsed()
	if err := f.c.Kill(old); err != nil {
		t.Fatal(err)
	}
	elected := f.agreedLeader(f.others(old), old, "a new leader after killing "+old)
	f.w.waitProgress(t, f.w.elapsed(), linProgress, "operations answered under "+elected)
	if err := f.c.Restart(old); err != nil {
		t.Fatal(err)
	}
	leader := f.agreedLeader(f.all(), "", old+" follows after its restart")
	f.record("kill-"+old, start,
		fmt.Sprintf("killed leader %s, %s elected, %s restarted; %s leads", old, elected, old, leader))
}

// partitionLeader cuts the leader off from the other managers (clients
// still reach it: reads sent to it must not answer stale), waits for the
// majority to elect a leader and serve, and heals.
func (f *linFaults) partitionLeader() {
	t := f.t
	old := f.agreedLeader(f.all(), "", "one leader before the partition")
	if err := f.c.CutOffManager(f.fw, old, f.gids); err != nil {
		t.Fatal(err)
	}
	start := f.w.elapsed()
	elected := f.agreedLeader(f.others(old), old, "the majority elects a leader without "+old)
	f.w.waitProgress(t, f.w.elapsed(), linProgress, "operations answered under "+elected)
	wait(t, 30*time.Second, "operations sent to the cut-off "+old, func() error {
		if n := f.w.attemptedSince(start, old); n < 3 {
			return fmt.Errorf("%d operations sent to %s since the cut", n, old)
		}
		return nil
	})
	staleAnswers := f.w.answeredSince(start, old)
	if err := f.fw.Heal(); err != nil {
		t.Fatal(err)
	}
	leader := f.agreedLeader(f.all(), "", old+" follows after healing")
	f.record("partition-"+old, start, fmt.Sprintf("cut leader %s off, %s elected, "+
		"%s answered %d operations meanwhile, healed; %s leads",
		old, elected, old, staleAnswers, leader))
}

// pauseLeader freezes the leader (SIGSTOP) until the others have elected
// a leader that acknowledged writes and a client's read is waiting at
// the frozen one, then thaws it: it wakes believing it still leads until
// its next lease check, with that read to answer. A leader that answered
// reads from its store alone would answer it stale.
func (f *linFaults) pauseLeader() {
	t := f.t
	old := f.agreedLeader(f.all(), "", "one leader before the pause")
	if err := f.c.Freeze(old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.c.Thaw(old) }) // if the test fails while frozen
	start := f.w.elapsed()
	elected := f.agreedLeader(f.others(old), old, "a new leader while "+old+" is frozen")
	// Clients wait out their timeout at the frozen manager: a few
	// answers show the new leader serving.
	f.w.waitProgress(t, f.w.elapsed(), 5, "operations answered under "+elected)
	after := f.w.elapsed()
	wait(t, 30*time.Second, "reads waiting at the frozen "+old, func() error {
		if n := f.w.readsWaiting(old, after); n < linReadsWaiting {
			return fmt.Errorf("%d reads sent to %s since %s are waiting, want %d",
				n, old, after.Round(time.Millisecond), linReadsWaiting)
		}
		return nil
	})
	if err := f.c.Thaw(old); err != nil {
		t.Fatal(err)
	}
	thawed := f.w.elapsed()
	leader := f.agreedLeader(f.all(), "", old+" follows after it thawed")
	wait(t, 30*time.Second, "the reads waiting at "+old+" end", func() error {
		if n := f.w.readsWaiting(old, after); n > 0 {
			return fmt.Errorf("%d reads still wait at %s", n, old)
		}
		return nil
	})
	f.record("pause-"+old, start, fmt.Sprintf("froze leader %s, %s elected and answered, "+
		"thawed %s at %s; %s; %s leads", old, elected, old, thawed.Round(time.Millisecond),
		f.w.outcomes(old, after, thawed), leader))
}

// transferLeadership asks the leader to hand leadership over.
func (f *linFaults) transferLeadership() {
	t := f.t
	old := f.agreedLeader(f.all(), "", "one leader before the transfer")
	start := f.w.elapsed()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	resp, err := f.ctl[old].TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
	cancel()
	if err != nil {
		t.Fatalf("transfer leadership from %s: %v", old, err)
	}
	leader := f.agreedLeader(f.all(), old, "a new leader after the transfer from "+old)
	f.w.waitProgress(t, f.w.elapsed(), linProgress, "operations answered under "+leader)
	f.record("transfer-"+old, start, fmt.Sprintf("%s handed leadership to %s (answer %q)",
		old, leader, resp.GetLeader()))
}

// checkFinalValues checks directly what the model implies at the end:
// every manager reads the same final value of a key, written by a write
// that no acknowledged write followed. An acknowledged write started
// after the final value's write returned would have overwritten it:
// then an acknowledged write was lost.
func checkFinalValues(t *testing.T, ops []linOp) {
	t.Helper()
	for k := range linKeys {
		final := map[int64][]string{}
		writers := map[int64]linOp{}
		var lastAcked *linOp
		for _, op := range ops {
			switch {
			case op.in.key != k:
			case op.client == linClients && op.answered:
				final[op.out.value] = append(final[op.out.value], op.via)
			case op.in.write:
				writers[op.in.value] = op
				if op.answered && (lastAcked == nil || op.call > lastAcked.call) {
					lastAcked = &op
				}
			}
		}
		if len(final) != 1 {
			t.Errorf("%s: the managers read different final values: %v", linApp(k), final)
			continue
		}
		var v int64
		for v = range final {
		}
		w, ok := writers[v]
		switch {
		case v == 0 && lastAcked != nil:
			t.Errorf("%s: final value 0, the initial one, though %d was acknowledged",
				linApp(k), lastAcked.in.value)
			continue
		case v != 0 && !ok:
			t.Errorf("%s: final value %d was never written", linApp(k), v)
			continue
		}
		if lastAcked == nil {
			t.Logf("%s: final value %d, no write acknowledged", linApp(k), v)
			continue
		}
		wret := w.ret
		if w.unknown() {
			wret = 1<<63 - 1 // may have taken effect at any time after its call
		}
		for _, op := range ops {
			if op.in.key == k && op.in.write && op.answered && op.call > wret {
				t.Errorf("%s: final value %d, written [%s, %s], is older than the acknowledged write of %d "+
					"that started after it at %s: an acknowledged write was lost",
					linApp(k), v, w.call, w.ret, op.in.value, op.call)
				break
			}
		}
		t.Logf("%s: final value %d (written by client %d via %s, acknowledged %t); "+
			"last acknowledged write %d", linApp(k), v, w.client, w.via, w.answered, lastAcked.in.value)
	}
}

// checkNoStaleReads checks directly the commonest way to break
// linearizability, with a message naming the operations: a read that
// returns a value overwritten by an acknowledged write that returned
// before the read was called, when the overwritten value's write had
// returned before that write was called.
func checkNoStaleReads(t *testing.T, ops []linOp) {
	t.Helper()
	const never = time.Duration(1<<63 - 1)
	type written struct {
		ret time.Duration // when its write returned; never if unknown
		op  linOp
	}
	byValue := map[linInput]written{}
	for _, op := range ops {
		if op.in.write {
			ret := op.ret
			if op.unknown() {
				ret = never
			}
			byValue[op.in] = written{ret, op}
		}
	}
	stale := 0
	for _, r := range ops {
		if r.in.write || !r.answered || r.out.notFound {
			continue
		}
		w, ok := byValue[linInput{key: r.in.key, write: true, value: r.out.value}]
		if !ok {
			if r.out.value == 0 {
				w.ret = -1 // the initial value, "written" before everything
			} else {
				t.Errorf("%s: client %d read %d via %s, a value never written",
					linApp(r.in.key), r.client, r.out.value, r.via)
				continue
			}
		}
		for _, o := range ops {
			if o.in.key != r.in.key || !o.in.write || !o.answered ||
				o.in.value == r.out.value || o.call <= w.ret || o.ret >= r.call {
				continue
			}
			stale++
			if stale <= 5 {
				t.Errorf("%s: client %d read %d via %s at [%s, %s], but the write of %d, "+
					"acknowledged via %s at [%s, %s], had overwritten it before the read began",
					linApp(r.in.key), r.client, r.out.value, r.via, r.call, r.ret,
					o.in.value, o.via, o.call, o.ret)
			}
			break
		}
	}
	if stale > 5 {
		t.Errorf("%d stale reads in all", stale)
	}
}

// registerModel is a register per key, initially 0. A write sets it (an
// unknown write too: one without an answer is given a return after every
// other operation, so it may take effect at any time after its call, or
// never, when linearized last); a read must return it. NotFound is never
// right: the registers' apps exist throughout.
func registerModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := make([][]porcupine.Operation, linKeys)
			for _, op := range h {
				k := op.Input.(linInput).key
				by[k] = append(by[k], op)
			}
			return by
		},
		Init: func() any { return int64(0) },
		Step: func(state, input, output any) (bool, any) {
			st, in, out := state.(int64), input.(linInput), output.(linOutput)
			switch {
			case out.notFound:
				return false, st
			case in.write:
				return true, in.value
			default:
				return out.value == st, st
			}
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			switch {
			case out.notFound:
				return fmt.Sprintf("%s: not found", linApp(in.key))
			case in.write:
				return fmt.Sprintf("scale %s %d", linApp(in.key), in.value)
			default:
				return fmt.Sprintf("get %s -> %d", linApp(in.key), out.value)
			}
		},
		DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return info.(string)
		},
	}
}

// porcupineOps turns the history into porcupine operations. A write
// without an answer returns after every other operation. Such a write
// whose value no read returned is left out: it can always be linearized
// last, where nothing observes it (values are unique per key), so
// leaving it out changes no verdict and keeps the search small.
func porcupineOps(ops []linOp) (out []porcupine.Operation, pending, dropped int) {
	observed := map[linInput]bool{}
	var last time.Duration
	for _, op := range ops {
		if !op.in.write && op.answered && !op.out.notFound {
			observed[linInput{key: op.in.key, write: true, value: op.out.value}] = true
		}
		last = max(last, op.ret)
	}
	for _, op := range ops {
		if !op.answered && !op.in.write {
			continue // a read without an answer constrains nothing
		}
		ret := op.ret
		meta := "via " + op.via
		if op.unknown() {
			if !observed[op.in] {
				dropped++
				continue
			}
			pending++
			ret = last + time.Second
			meta += fmt.Sprintf(": unknown outcome (%v)", op.err)
		}
		out = append(out, porcupine.Operation{
			ClientId: op.client,
			Input:    op.in,
			Output:   op.out,
			Call:     int64(op.call),
			Return:   int64(ret),
			Metadata: meta,
		})
	}
	return out, pending, dropped
}

// checkLinearizable runs porcupine over ops and fails t with its verdict
// and a visualization written to a file named in the message.
func checkLinearizable(t *testing.T, ops []linOp, faults []linFault) {
	t.Helper()
	pops, pending, dropped := porcupineOps(ops)
	t.Logf("porcupine: %d operations; %d writes of unknown outcome read by someone kept "+
		"(returning last), %d nobody read left out", len(pops), pending, dropped)

	model := registerModel()
	t0 := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, pops, 2*time.Minute)
	t.Logf("porcupine: %s in %s", res, time.Since(t0).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}

	var notes []porcupine.Annotation
	for _, f := range faults {
		notes = append(notes, porcupine.Annotation{Tag: "faults", Start: int64(f.start),
			End: int64(f.end), Description: f.name, Details: f.detail})
	}
	info.AddAnnotations(notes)
	file, err := os.CreateTemp("", "hivemind-linearizable-*.html")
	if err != nil {
		t.Fatalf("porcupine: history is %s; and writing the visualization failed: %v", res, err)
	}
	file.Close()
	if err := porcupine.VisualizePath(model, info, file.Name()); err != nil {
		t.Fatalf("porcupine: history is %s; and writing the visualization to %s failed: %v",
			res, file.Name(), err)
	}
	t.Fatalf("porcupine: history of %d operations is %s (not linearizable unless \"unknown\": "+
		"the check timed out); visualization: %s", len(pops), res, file.Name())
}

// testRegisterModel checks that the model and the conversion accept what
// is linearizable and reject what is not: a checker that passes
// everything would make TestLinearizable vacuous.
func testRegisterModel(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	w := func(key int, v int64, call, ret int) linOp {
		return linOp{in: linInput{key: key, write: true, value: v}, call: ms(call), ret: ms(ret), answered: true}
	}
	lost := func(key int, v int64, call, ret int) linOp {
		op := w(key, v, call, ret)
		op.answered, op.err = false, errors.New("deadline exceeded")
		return op
	}
	r := func(key int, v int64, call, ret int) linOp {
		return linOp{in: linInput{key: key}, out: linOutput{value: v}, call: ms(call), ret: ms(ret), answered: true}
	}
	missing := r(0, 0, 0, 5)
	missing.out.notFound = true

	tests := []struct {
		name string
		ops  []linOp
		want bool // linearizable
	}{
		{name: "read after write", want: true,
			ops: []linOp{w(0, 1, 0, 10), r(0, 1, 20, 30)}},
		{name: "read concurrent with a write sees either", want: true,
			ops: []linOp{w(0, 1, 0, 10), w(0, 2, 20, 40), r(0, 1, 25, 30), r(0, 2, 31, 35)}},
		{name: "read older than an acknowledged write", want: false,
			ops: []linOp{w(0, 1, 0, 10), w(0, 2, 20, 30), r(0, 1, 40, 50)}},
		{name: "read goes back in time", want: false,
			ops: []linOp{w(0, 1, 0, 10), w(0, 2, 0, 50), r(0, 2, 20, 25), r(0, 1, 30, 35)}},
		{name: "acknowledged write lost", want: false,
			ops: []linOp{w(1, 1, 0, 10), r(1, 0, 20, 30)}},
		{name: "other key's writes do not count", want: true,
			ops: []linOp{w(0, 1, 0, 10), w(1, 1, 0, 10), r(1, 1, 20, 30), r(0, 1, 20, 30)}},
		{name: "unknown write seen later", want: true,
			ops: []linOp{lost(0, 1, 0, 10), r(0, 0, 20, 30), r(0, 1, 40, 50)}},
		{name: "unknown write seen then unseen", want: false,
			ops: []linOp{lost(0, 1, 0, 10), r(0, 1, 20, 30), r(0, 0, 40, 50)}},
		{name: "app not found", want: false, ops: []linOp{missing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pops, _, _ := porcupineOps(tc.ops)
			if got := porcupine.CheckOperations(registerModel(), pops); got != tc.want {
				t.Errorf("porcupine says linearizable=%t, want %t", got, tc.want)
			}
		})
	}
}
