package integration

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/internal/testenv"
)

// Loopback subnets, iptables chain and group IDs of the worker fault
// tests (issue 4).
const (
	workerPartitionSubnet = 21
	workerPartitionChain  = "HM-TEST-21"
	workerPartitionGIDs   = 42100 // + i for mi, + 10 + i for wi
	ctdRestartSubnet      = 22

	// workerGrace is the leader's grace before it marks a worker whose
	// gossip member died down (deploy.DefaultConfig().WorkerGrace).
	workerGrace = 5 * time.Second
)

// keepDirs (HIVEMIND_KEEP_DIRS set) leaves the run directories of these
// tests, logs included, in place for a post-mortem.
var keepDirs = os.Getenv("HIVEMIND_KEEP_DIRS") != ""

// Issue 4, fault tests: a worker cut off from every manager and every
// other worker (gossip and gRPC, both ways) is marked down after gossip
// death plus the grace, and its tasks run elsewhere while its own
// containers keep running where it is (static stability). A scale made
// during the partition holds. Healed, the worker is ready again and
// stops its surplus: exactly the replicas run across every containerd,
// no task twice.
func TestWorkerPartition(t *testing.T) {
	t.Parallel()
	fw, removeFirewall := newFirewall(t, workerPartitionChain)
	partition, err := cluster.NewCut(fw)
	if err != nil {
		t.Fatal(err)
	}
	removePartition := func() {
		if err := partition.Remove(); err != nil {
			t.Errorf("remove the partition's chain: %v", err)
		}
	}
	t.Cleanup(removePartition)

	gids := cluster.MemberGIDs(3, 3, workerPartitionGIDs)
	bin, err := cluster.GroupWrapper(t.TempDir(), binary, gids)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.New(cluster.Config{
		Binary:   bin,
		Managers: 3,
		Workers:  3,
		Subnet:   workerPartitionSubnet,
		Log:      harnessLog,
		KeepDir:  keepDirs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Heal first, so that the cluster removes its apps normally.
		removePartition()
		removeFirewall()
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	// The streams the victim opens to the managers must be marked from
	// their first packet: see Firewall.MarkDialed.
	const victim = "w3"
	if err := fw.MarkDialed(gids[victim], c.WorkerIP(3)); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	onFailure(t, c)

	app := cluster.WebApp{Name: "wp", Image: c.Image("v1"), Replicas: 6}
	deploy(t, c, app.YAML())
	st := waitSettled(t, c, app.Name, 1, 90*time.Second)
	var cutOff []cluster.Task
	for _, task := range st.Live() {
		if task.Node == victim {
			cutOff = append(cutOff, task)
		}
	}
	if len(cutOff) == 0 {
		t.Fatalf("no task of %s on %s to cut off: %+v", app.Name, victim, st.Live())
	}
	before, err := c.TaskProcs(victim)
	if err != nil {
		t.Fatal(err)
	}

	watch := watchStates(c, app.Name)
	defer watch.finish()
	if err := c.Isolate(partition, victim, gids); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	t.Logf("isolated %s with tasks %v:\n%s", victim, taskIDs(cutOff), partition.Rules())

	// Down after gossip death plus the grace, not before the grace.
	if err := c.WaitNodeStatus(victim, "down", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if d := down.Sub(cut); d < workerGrace {
		t.Errorf("%s marked down %s after the cut, within the grace of %s", victim, d, workerGrace)
	}
	t.Logf("%s marked down %s after the cut", victim, since(cut))

	// Its tasks run elsewhere: the replicas, healthy, none on the victim.
	wait(t, 60*time.Second, fmt.Sprintf("%s runs %d replicas away from %s", app.Name, app.Replicas, victim),
		func() error { return settledAway(c, app.Name, victim) })
	t.Logf("%s's tasks replaced %s after it was marked down", victim, since(down))

	// Static stability: where it is, the victim runs its containers on,
	// the same processes, and they answer.
	checkStillRunning(t, c, victim, cutOff, before)

	// A write the cluster acknowledges during the partition.
	if _, err := c.CLI("app", "scale", app.Name, "5"); err != nil {
		t.Fatalf("app scale %s 5 during the partition: %v", app.Name, err)
	}
	app.Replicas = 5
	wait(t, 60*time.Second, fmt.Sprintf("%s scaled to %d away from %s", app.Name, app.Replicas, victim),
		func() error { return settledAway(c, app.Name, victim) })
	checkStillRunning(t, c, victim, cutOff, before)
	running, err := c.RunningTasks()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before healing: %d replicas wanted, containers running: %v", app.Replicas, running)

	if err := partition.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	// Ready within seconds: the worker rejoins gossip as soon as its
	// reports go through, rather than waiting for memberlist's next
	// push-pull (up to 30s) to learn that the managers hold it dead.
	if err := c.WaitNodeStatus(victim, "ready", 15*time.Second); err != nil {
		t.Fatalf("%s after healing: %v", victim, err)
	}
	t.Logf("%s ready %s after healing", victim, since(healed))
	wait(t, 60*time.Second, victim+"'s surplus containers stopped", func() error {
		if err := containersMatch(c); err != nil {
			return err
		}
		return runsExactly(c, app.Replicas)
	})
	t.Logf("%s's surplus stopped %s after healing", victim, since(healed))

	// End checks: the acknowledged scale holds, exactly the replicas
	// run in the containerds, no task twice, and every task answers.
	final := waitSettled(t, c, app.Name, 1, 30*time.Second)
	if int(final.Replicas) != app.Replicas {
		t.Errorf("%s has %d replicas, want the %d acknowledged during the partition",
			app.Name, final.Replicas, app.Replicas)
	}
	checkRunningOnce(t, c, final, app.Replicas)
	if err := runsExactly(c, app.Replicas); err != nil {
		t.Error(err)
	}
	waitAnswers(t, c, app.Name, "v1", 30*time.Second)

	// What a user saw of the cut-off tasks: lost while the worker was
	// down, never running again.
	seen := watch.finish()
	for _, v := range seen.withoutProcess(cut, func(string, time.Time) bool { return false }) {
		t.Errorf("shown running without a process: %s", v)
	}
	for _, task := range cutOff {
		states := seen.states(task.ID, cut)
		t.Logf("task %s on %s was shown %v", task.ID, victim, states)
		for _, s := range states {
			if s != "running" && s != "lost" {
				// Only a report from the far side could say so.
				t.Errorf("task %s on %s shown %v during the partition", task.ID, victim, states)
				break
			}
		}
		if after := seen.states(task.ID, down); slices.Contains(after, "running") {
			t.Errorf("task %s on %s shown %v after %s was marked down", task.ID, victim, after, victim)
		}
	}
}

// settledAway is an error unless app has settled on version 1 with no
// live task on node.
func settledAway(c *cluster.Cluster, app, node string) error {
	st, err := c.AppStatus(app)
	if err != nil {
		return err
	}
	for _, task := range st.Live() {
		if task.Node == node {
			return fmt.Errorf("task %s still shown %s on %s", task.ID, task.State, node)
		}
	}
	return st.Settled(1)
}

// checkStillRunning checks that the tasks of node run on in the same
// processes as in before, and answer.
func checkStillRunning(t *testing.T, c *cluster.Cluster, node string, tasks []cluster.Task,
	before map[string]cluster.TaskProc) {
	t.Helper()
	now, err := c.TaskProcs(node)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		p := now[task.ID]
		if !p.Running() || p.Pid != before[task.ID].Pid {
			t.Errorf("task %s on %s: %+v, want running as pid %d", task.ID, node, p, before[task.ID].Pid)
			continue
		}
		body, err := cluster.Get(task.Addresses["http"], "/")
		if want := "VERSION=v1 TASK=" + task.ID; err != nil || body != want {
			t.Errorf("task %s on %s answers %q (%v), want %q", task.ID, node, body, err, want)
		}
	}
}

// runsExactly is an error unless exactly n containers run with a live
// process across every worker's containerd, each ID once.
func runsExactly(c *cluster.Cluster, n int) error {
	running, err := c.RunningTasks()
	if err != nil {
		return err
	}
	total := 0
	where := map[string][]string{}
	for w, ids := range running {
		total += len(ids)
		for _, id := range ids {
			where[id] = append(where[id], w)
		}
	}
	for id, ws := range where {
		if len(ws) > 1 {
			return fmt.Errorf("container %s runs on %v", id, ws)
		}
	}
	if total != n {
		return fmt.Errorf("%d containers run, want %d: %v", total, n, running)
	}
	return nil
}

// Issue 4, fault tests: a worker and its containerd stop (the worker
// killed, containerd stopped as `systemctl stop` does, so the shims and
// the containers live on), one container's process is killed meanwhile,
// and both start again. The killed task is reported failed with the
// exit code of a SIGKILL and replaced; the worker's other tasks are
// adopted, same processes; from the worker's first report on, app
// status never shows a task running whose process is gone. A scale made
// while the worker is away holds.
func TestWorkerContainerdRestart(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:   binary,
		Managers: 3,
		Workers:  2,
		Subnet:   ctdRestartSubnet,
		Log:      harnessLog,
		KeepDir:  keepDirs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	onFailure(t, c)

	app := cluster.WebApp{Name: "cr", Image: c.Image("v1"), Replicas: 4}
	deploy(t, c, app.YAML())
	st := waitSettled(t, c, app.Name, 1, 90*time.Second)
	const victim = "w1"
	var mine []string
	for _, task := range st.Live() {
		if task.Node == victim {
			mine = append(mine, task.ID)
		}
	}
	sort.Strings(mine)
	if len(mine) < 2 {
		t.Fatalf("want at least 2 tasks of %s on %s: %+v", app.Name, victim, st.Live())
	}
	killed, kept := mine[0], mine[1:]
	before, err := c.TaskProcs(victim)
	if err != nil {
		t.Fatal(err)
	}
	shims, err := c.ShimPIDs(victim)
	if err != nil {
		t.Fatal(err)
	}

	// The worker dies without a word; containerd is stopped the way its
	// systemd unit does, signalling the daemon alone.
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() {
		if err := c.StartContainerd(victim); err != nil && !errors.Is(err, testenv.ErrDaemonRunning) {
			t.Error(err)
		}
		if !c.Running(victim) {
			if err := c.Restart(victim); err != nil {
				t.Error(err)
			}
		}
	})
	if err := c.StopContainerd(victim, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The shims hold the containers' processes without containerd.
	for _, pid := range shims {
		if !testenv.ProcessAlive(pid) {
			t.Errorf("shim %d of %s died with containerd", pid, victim)
		}
	}
	for _, id := range mine {
		pid, err := c.InitPID(victim, id)
		if err != nil {
			t.Fatal(err)
		}
		if uint32(pid) != before[id].Pid || !testenv.ProcessAlive(pid) {
			t.Fatalf("task %s: init pid %d (alive %t), want %d alive without containerd",
				id, pid, testenv.ProcessAlive(pid), before[id].Pid)
		}
	}
	pid, err := c.KillTask(victim, killed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed task %s (pid %d) on %s with its worker and containerd stopped", killed, pid, victim)

	// A write the cluster acknowledges while the worker is away.
	if _, err := c.CLI("app", "scale", app.Name, "5"); err != nil {
		t.Fatalf("app scale %s 5: %v", app.Name, err)
	}
	app.Replicas = 5

	if err := c.StartContainerd(victim); err != nil {
		t.Fatal(err)
	}
	watch := watchStates(c, app.Name)
	defer watch.finish()
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	t.Logf("%s and its containerd back %s after the stop", victim, since(stopped))

	var failed cluster.Task
	wait(t, 60*time.Second, fmt.Sprintf("task %s reported failed", killed), func() error {
		st, err := c.AppStatus(app.Name)
		if err != nil {
			return err
		}
		for _, task := range st.Tasks {
			if task.ID == killed {
				failed = task
				if task.State != "failed" {
					return fmt.Errorf("task %s is %s", killed, task.State)
				}
				return nil
			}
		}
		return fmt.Errorf("task %s not in app status", killed)
	})
	t.Logf("task %s reported %s %s after the restart: exit code %d, %q",
		killed, failed.State, since(restarted), failed.ExitCode, failed.Message)
	if failed.ExitCode != 137 || failed.Message != "exited with code 137" {
		t.Errorf("task %s: exit code %d, message %q; want 137, %q",
			killed, failed.ExitCode, failed.Message, "exited with code 137")
	}

	final := waitSettled(t, c, app.Name, 1, 90*time.Second)
	waitAnswers(t, c, app.Name, "v1", 30*time.Second)
	after, err := c.TaskProcs(victim)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range kept {
		if onNode := taskNode(final, id); onNode != victim {
			t.Errorf("task %s of %s: on %q at the end, want still on %s", id, app.Name, onNode, victim)
		}
		if p := after[id]; !p.Running() || p.Pid != before[id].Pid {
			t.Errorf("task %s: %+v after the restart, want adopted as pid %d", id, p, before[id].Pid)
		}
	}
	if taskNode(final, killed) != "" {
		t.Errorf("killed task %s still live at the end", killed)
	}

	// What app status showed from the worker's restart on, next to what
	// its containerd ran.
	seen := watch.finish()
	if n := seen.samples(restarted); n == 0 {
		t.Errorf("no sample of app status and containerd taken after the restart")
	}
	// The killed task's process died while its worker was away; the
	// store keeps the last report, running, until the restarted worker
	// sends its first.
	reported, ok := seen.first(killed, "failed")
	if !ok {
		reported = time.Now()
	}
	window := reported.Sub(restarted).Round(time.Millisecond)
	t.Logf("%d task samples after the restart; %s shown running without a process until %s after it (the worker's first report)",
		seen.samples(restarted), killed, window)
	if window > 15*time.Second {
		t.Errorf("task %s shown running for %s after the restart of %s without a process", killed, window, victim)
	}
	for _, v := range seen.withoutProcess(restarted, func(id string, at time.Time) bool {
		return id == killed && at.Before(reported)
	}) {
		t.Errorf("shown running without a process: %s", v)
	}
	for id := range seen.shown {
		if states := seen.states(id, restarted); slices.Contains(states, "lost") {
			t.Errorf("task %s shown %v: %s was marked down although back within the grace", id, states, victim)
		}
	}

	// End checks.
	if int(final.Replicas) != app.Replicas {
		t.Errorf("%s has %d replicas, want the %d acknowledged while %s was away",
			app.Name, final.Replicas, app.Replicas, victim)
	}
	wait(t, 30*time.Second, "workers' containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})
	checkRunningOnce(t, c, final, app.Replicas)
	if err := runsExactly(c, app.Replicas); err != nil {
		t.Error(err)
	}
}

// taskNode is the node of the live task id of st, "" if it is not live.
func taskNode(st *cluster.AppStatus, id string) string {
	for _, task := range st.Live() {
		if task.ID == id {
			return task.Node
		}
	}
	return ""
}

func taskIDs(ts []cluster.Task) []string {
	var ids []string
	for _, task := range ts {
		ids = append(ids, task.ID)
	}
	return ids
}

// stateWatch samples an app's status, then every worker's containerd,
// in the background, and keeps the state each task was shown in at each
// sample and, for a task shown running, whether the containerd of its
// node ran its process in the view taken just after.
type stateWatch struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	shown map[string][]shownAt // task ID -> its state at each sample
}

// shownAt is a task's state in the sample taken at at.
type shownAt struct {
	at    time.Time
	state string
	node  string
	// proc is what its node's containerd said of it, for a task shown
	// running; nil when that containerd did not answer.
	proc *cluster.TaskProc
}

func watchStates(c *cluster.Cluster, app string) *stateWatch {
	w := &stateWatch{stop: make(chan struct{}), done: make(chan struct{}),
		shown: map[string][]shownAt{}}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(cluster.PollInterval):
			}
			at := time.Now()
			st, err := c.AppStatus(app)
			if err != nil {
				continue
			}
			procs := map[string]map[string]cluster.TaskProc{}
			for _, wk := range c.Workers() {
				if p, err := c.TaskProcs(wk.Name); err == nil {
					procs[wk.Name] = p
				}
			}
			w.record(at, st, procs)
		}
	}()
	return w
}

func (w *stateWatch) record(at time.Time, st *cluster.AppStatus,
	procs map[string]map[string]cluster.TaskProc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, task := range st.Tasks {
		s := shownAt{at: at, state: task.State, node: task.Node}
		if view, ok := procs[task.Node]; ok && task.State == "running" {
			p := view[task.ID]
			s.proc = &p
		}
		w.shown[task.ID] = append(w.shown[task.ID], s)
	}
}

// finish stops the sampling (it may be called again) and returns the
// watch for reading.
func (w *stateWatch) finish() *stateWatch {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return w
}

// samples is how many samples showed a task from t on.
func (w *stateWatch) samples(t time.Time) int {
	n := 0
	for _, ss := range w.shown {
		for _, s := range ss {
			if !s.at.Before(t) {
				n++
			}
		}
	}
	return n
}

// states returns the distinct states task id was shown in, in order,
// in the samples taken from t on.
func (w *stateWatch) states(id string, t time.Time) []string {
	var out []string
	for _, s := range w.shown[id] {
		if !s.at.Before(t) && (len(out) == 0 || out[len(out)-1] != s.state) {
			out = append(out, s.state)
		}
	}
	return out
}

// first returns when task id was first shown in state.
func (w *stateWatch) first(id, state string) (time.Time, bool) {
	for _, s := range w.shown[id] {
		if s.state == state {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// withoutProcess names every sample from t on that showed a task
// running while its node's containerd, asked just after, did not run
// its process; except those of excuse says may (a task whose process
// died while its worker could not say so).
func (w *stateWatch) withoutProcess(t time.Time, excuse func(id string, at time.Time) bool) []string {
	var out []string
	for id, ss := range w.shown {
		for _, s := range ss {
			if s.at.Before(t) || s.proc == nil || s.proc.Running() || excuse(id, s.at) {
				continue
			}
			out = append(out, fmt.Sprintf("at %s task %s shown running on %s: containerd %+v",
				s.at.Format("15:04:05.000"), id, s.node, *s.proc))
		}
	}
	sort.Strings(out)
	return out
}
