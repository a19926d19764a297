package integration

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// rolloutWatch samples an app's status in the background and remembers
// every task ID seen per version.
type rolloutWatch struct {
	mu    sync.Mutex
	seen  map[int64]map[string]bool
	stop  chan struct{}
	done  chan struct{}
	fails int // samples that got no answer (no leader, killed manager)
}

func watchRollout(c *cluster.Cluster, app string) *rolloutWatch {
	w := &rolloutWatch{seen: map[int64]map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(cluster.PollInterval):
			}
			st, err := c.AppStatus(app)
			w.mu.Lock()
			if err != nil {
				w.fails++
			} else {
				w.record(st)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *rolloutWatch) record(st *cluster.AppStatus) {
	for _, task := range st.Tasks {
		v := int64(task.Version)
		if w.seen[v] == nil {
			w.seen[v] = map[string]bool{}
		}
		w.seen[v][task.ID] = true
	}
}

func (w *rolloutWatch) finish() map[int64]map[string]bool {
	close(w.stop)
	<-w.done
	return w.seen
}

// firstHealthy waits until a task of version is healthy and returns the
// IDs of the healthy tasks of that version.
func firstHealthy(t *testing.T, c *cluster.Cluster, app string, version int64) []string {
	t.Helper()
	var ids []string
	wait(t, 60*time.Second, fmt.Sprintf("a healthy task of %s version %d", app, version), func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for _, task := range tasksOf(st, version) {
			if task.Healthy && task.State == "running" {
				ids = append(ids, task.ID)
			}
		}
		if len(ids) == 0 {
			return fmt.Errorf("no healthy task of version %d yet", version)
		}
		return nil
	})
	sort.Strings(ids)
	return ids
}

// Point 6: kill -9 the leader in the middle of a rolling update. A new
// leader finishes the deployment; no task is placed twice and v2 tasks that
// were healthy before the kill are the same tasks at the end. The killed
// manager, restarted on its data dir, rejoins with its state.
func TestLeaderKillDuringRollout(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	app := cluster.WebApp{Name: "ha", Image: c.Image("v1"), Replicas: 4}
	deployApp(t, c, app)
	waitSettled(t, c, app.Name, 1, 60*time.Second)

	app.Image = c.Image("v2")
	watch := watchRollout(c, app.Name)
	deploy(t, c, app.YAML())
	before := firstHealthy(t, c, app.Name, 2)
	pidsBefore := taskPIDs(t, c, app.Name, before)

	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := c.KillManager(leader); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.Running(leader) {
			if err := c.Restart(leader); err != nil {
				t.Error(err)
			}
		}
	})
	newLeader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatalf("no new leader after killing %s: %v", leader, err)
	}
	t.Logf("killed leader %s with v2 tasks %v healthy; %s leads after %s",
		leader, before, newLeader, time.Since(killed).Round(time.Millisecond))

	st := waitSettled(t, c, app.Name, 2, 90*time.Second)
	seen := watch.finish()
	d := waitDeployment(t, c, app.Name, 10*time.Second)
	if d.Status != "successful" {
		t.Errorf("deployment %s: %q (%s), want successful", d.ID, d.Status, d.Description)
	}
	waitAnswers(t, c, app.Name, "v2", 10*time.Second)

	// The same task IDs as before the kill, and no task placed twice:
	// exactly replicas v2 tasks were ever seen.
	final := map[string]bool{}
	for _, task := range st.Live() {
		if final[task.ID] {
			t.Errorf("task %s listed twice", task.ID)
		}
		final[task.ID] = true
	}
	for _, id := range before {
		if !final[id] {
			t.Errorf("v2 task %s, healthy before the kill, is gone: restarted or replaced (final %v)", id, st.Live())
		}
	}
	pidsAfter := taskPIDs(t, c, app.Name, before)
	for _, id := range before {
		if pidsBefore[id] != pidsAfter[id] {
			t.Errorf("v2 task %s ran as pid %d before the kill, %d after: restarted", id, pidsBefore[id], pidsAfter[id])
		}
	}
	if n := len(seen[2]); n != app.Replicas {
		t.Errorf("%d v2 tasks were seen during the rollout, want %d (placed twice?): %v", n, app.Replicas, seen[2])
	}

	// The killed manager comes back with its state.
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	wait(t, 60*time.Second, leader+" rejoined and sees app ha at version 2", func() error {
		var st cluster.AppStatus
		if err := c.JSONAt(leader, &st, "app", "status", app.Name); err != nil {
			return err
		}
		if st.Version != 2 {
			return fmt.Errorf("%s: app ha at version %d, want 2", leader, st.Version)
		}
		var cs cluster.ClusterStatus
		if err := c.JSONAt(leader, &cs, "cluster", "status"); err != nil {
			return err
		}
		if cs.Leader == "" || cs.Leader == leader && newLeader != leader {
			return fmt.Errorf("%s: sees leader %q", leader, cs.Leader)
		}
		return nil
	})
}

// Point 3: a worker killed in the middle of a deploy is marked down, and
// the deployment finishes with its tasks placed on the other workers.
// Point 8: started again, its containerd ends with exactly the containers
// of the tasks it is assigned.
func TestWorkerKilledDuringDeploy(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	app := cluster.WebApp{Name: "wk", Image: c.Image("v1"), Replicas: 3}
	deployApp(t, c, app)
	waitSettled(t, c, app.Name, 1, 60*time.Second)

	app.Image = c.Image("v2")
	deploy(t, c, app.YAML())
	firstHealthy(t, c, app.Name, 2)

	const victim = "w3"
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Cleanup(func() {
		if !c.Running(victim) {
			if err := c.Restart(victim); err != nil {
				t.Error(err)
			}
		}
	})
	if err := c.WaitNodeStatus(victim, "down", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s marked down %s after the kill", victim, time.Since(killed).Round(time.Millisecond))

	st := waitSettled(t, c, app.Name, 2, 90*time.Second)
	for _, task := range st.Live() {
		if task.Node == victim {
			t.Errorf("task %s is still on the dead worker %s", task.ID, victim)
		}
	}
	d := waitDeployment(t, c, app.Name, 10*time.Second)
	if d.Status != "successful" {
		t.Errorf("deployment %s: %q (%s), want successful", d.ID, d.Status, d.Description)
	}
	waitAnswers(t, c, app.Name, "v2", 10*time.Second)

	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodeStatus(victim, "ready", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	wait(t, 30*time.Second, victim+" holds exactly its assigned containers", func() error {
		return sameContainers(c, victim)
	})
}

// Point 8: a worker restarted on its data dir adopts the containers it
// should still run (same task, same process: not restarted) and removes
// the rest: the task of an app removed while it was away, and tasks of an
// app scaled down meanwhile if the leader picked them.
func TestWorkerRestartReconciles(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	keep := cluster.WebApp{Name: "rc-keep", Image: c.Image("v1"), Replicas: 3}
	gone := cluster.WebApp{Name: "rc-gone", Image: c.Image("v1"), Replicas: 3}
	down := cluster.WebApp{Name: "rc-down", Image: c.Image("v1"), Replicas: 3}
	for _, a := range []cluster.WebApp{keep, gone, down} {
		deployApp(t, c, a)
	}
	stKeep := waitSettled(t, c, keep.Name, 1, 60*time.Second)
	stGone := waitSettled(t, c, gone.Name, 1, 60*time.Second)
	waitSettled(t, c, down.Name, 1, 60*time.Second)

	const victim = "w2"
	kept := onNode(stKeep, victim)
	removed := onNode(stGone, victim)
	if kept == "" || removed == "" {
		t.Fatalf("want a task of %s and of %s on %s (3 replicas over 3 workers): %+v %+v",
			keep.Name, gone.Name, victim, stKeep.Live(), stGone.Live())
	}
	before, err := c.TaskPIDs(victim)
	if err != nil {
		t.Fatal(err)
	}
	if before[kept] == 0 || before[removed] == 0 {
		t.Fatalf("%s: no running container for tasks %s and %s: %v", victim, kept, removed, before)
	}

	// While the worker is away: remove one app, scale another down.
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.Running(victim) {
			if err := c.Restart(victim); err != nil {
				t.Error(err)
			}
		}
	})
	if _, err := c.CLI("app", "rm", gone.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CLI("app", "scale", down.Name, "1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodeStatus(victim, "ready", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	wait(t, 30*time.Second, victim+" holds exactly its assigned containers", func() error {
		return sameContainers(c, victim)
	})
	waitSettled(t, c, down.Name, 1, 30*time.Second)

	// The task of rc-keep on the worker is the same task, in the same
	// process, and healthy.
	st := waitSettled(t, c, keep.Name, 1, 30*time.Second)
	if id := onNode(st, victim); id != kept {
		t.Errorf("%s's task on %s was %s, now %q: not adopted", keep.Name, victim, kept, id)
	}
	after, err := c.TaskPIDs(victim)
	if err != nil {
		t.Fatal(err)
	}
	if after[kept] != before[kept] {
		t.Errorf("task %s ran as pid %d before the restart, %d after: restarted, not adopted",
			kept, before[kept], after[kept])
	}
	waitAnswers(t, c, keep.Name, "v1", 10*time.Second)
}

// taskPIDs returns the host PID of each task of ids of app, from its
// worker's containerd (0 for a task without a running container).
func taskPIDs(t *testing.T, c *cluster.Cluster, app string, ids []string) map[string]uint32 {
	t.Helper()
	st, err := c.AppStatus(app)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]uint32{}
	for _, task := range st.Live() {
		if !want[task.ID] {
			continue
		}
		pids, err := c.TaskPIDs(task.Node)
		if err != nil {
			t.Fatal(err)
		}
		out[task.ID] = pids[task.ID]
	}
	return out
}

// onNode returns the ID of a live task of st on node, "" if none.
func onNode(st *cluster.AppStatus, node string) string {
	for _, task := range st.Live() {
		if task.Node == node {
			return task.ID
		}
	}
	return ""
}

// Point 1 and DESIGN: with every manager killed, workers keep their tasks
// running; the whole control plane restarted on its data dirs keeps its
// state and calls no task or worker down: the same tasks, in the same
// processes, and the workers stay ready past the new leader's grace
// period. It has a cluster of its own: a failure here must not leave the
// shared cluster without workers.
func TestAllManagersRestart(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:   binary,
		Managers: 3,
		Workers:  2,
		Subnet:   restartSubnet,
		Log:      harnessLog,
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

	app := cluster.WebApp{Name: "steady", Image: c.Image("v1"), Replicas: 2}
	deployApp(t, c, app)
	before := waitSettled(t, c, app.Name, 1, 60*time.Second)
	pids := map[string]uint32{}
	for _, task := range before.Live() {
		p, err := c.TaskPIDs(task.Node)
		if err != nil {
			t.Fatal(err)
		}
		pids[task.ID] = p[task.ID]
	}

	for _, m := range c.Managers() {
		if err := c.Kill(m.Name); err != nil {
			t.Fatal(err)
		}
	}

	// Without any manager, every task keeps answering, checked for 3s.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if err := cluster.CheckAnswers(before, "v1"); err != nil {
			t.Fatalf("with no manager up: %v", err)
		}
		time.Sleep(cluster.PollInterval)
	}

	for _, m := range c.Managers() {
		if err := c.Restart(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.WaitLeader(60 * time.Second)
	if err != nil {
		t.Fatalf("no leader after restarting every manager: %v", err)
	}
	elected := time.Now()
	t.Logf("%s leads after the restart of every manager", leader)

	// The workers stay ready, checked for 15s after the election: longer
	// than the grace a new leader gives workers before it calls them down.
	for time.Since(elected) < 15*time.Second {
		nodes, err := c.Nodes()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Role == "worker" && n.Status != "ready" {
				t.Fatalf("worker %s is %s %s after the new leader was elected, though it never stopped",
					n.Name, n.Status, time.Since(elected).Round(100*time.Millisecond))
			}
		}
		time.Sleep(cluster.PollInterval)
	}

	after := waitSettled(t, c, app.Name, 1, 60*time.Second)
	for _, task := range after.Live() {
		p, err := c.TaskPIDs(task.Node)
		if err != nil {
			t.Fatal(err)
		}
		if pids[task.ID] == 0 || p[task.ID] != pids[task.ID] {
			t.Errorf("task %s on %s: pid %d before, %d after: replaced or restarted",
				task.ID, task.Node, pids[task.ID], p[task.ID])
		}
	}
	waitAnswers(t, c, app.Name, "v1", 10*time.Second)
}
