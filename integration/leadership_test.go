package integration

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// Loopback subnets of the leadership fault tests' own clusters.
const (
	leadershipSubnet = 19
	loseTwoSubnet    = 20
)

// engineWindow is how long the followers' engines are watched standing
// still after leadership has moved.
const engineWindow = 3 * time.Second

// Issue 4, fault tests: leadership moves three times during a rolling
// update, each time to another manager with `raft transfer-leadership`.
// After the moves only the leader's rollout engine runs: over a window,
// every follower reports its engine off and its steps and proposals
// standing still while the leader's steps go on. The rollout finishes
// with every replacement placed once (exactly replicas v2 tasks ever
// seen, each started once in the workers' logs), its completion and the
// cluster meta recorded once over all managers' logs. It ends with exactly the replicas running in
// the workers' containerds, no task twice, and every acknowledged write
// (one app deployed after each move) in every manager's replica.
func TestLeadershipMovesThreeTimes(t *testing.T) {
	t.Parallel()
	c := startOwnCluster(t, 3, 2, leadershipSubnet)

	web := cluster.WebApp{Name: "moves", Image: c.Image("v1"), Replicas: 4,
		BatchSize: 1, MinHealthyTime: "3s"}
	ackDeploy(t, c, web)
	waitSettled(t, c, web.Name, 1, 60*time.Second)

	// The moves start with the first replacement placed; with batches
	// of one held for min_healthy_time the rollout outlasts them.
	web.Image = c.Image("v2")
	watch := watchRollout(c, web.Name)
	ackDeploy(t, c, web)
	acked := []acknowledgedApp{{web, 2, "v2"}}
	waitPlaced(t, c, web.Name, 2, 1)

	for i := 1; i <= 3; i++ {
		leader, err := c.WaitLeader(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		to := nextManager(c, leader)
		moved := time.Now()
		if err := c.MoveLeadership(to, 60*time.Second); err != nil {
			t.Fatalf("move %d: %v", i, err)
		}
		t.Logf("move %d: leadership %s -> %s in %s", i, leader, to, since(moved))

		if d := latestDeployment(t, c, web.Name); d == nil || d.Status != "running" {
			t.Fatalf("after move %d the rollout of %s is no longer running (%+v): "+
				"the moves did not span it", i, web.Name, d)
		}

		// A write acknowledged right after the move.
		ack := cluster.WebApp{Name: fmt.Sprintf("moves-ack%d", i),
			Image: c.Image("v1"), Replicas: 1}
		ackDeploy(t, c, ack)
		acked = append(acked, acknowledgedApp{ack, 1, "v1"})

		// The rollout goes on under this leader before the next move.
		waitPlaced(t, c, web.Name, 2, i+1)
	}

	watchEngines(t, c)

	final := waitSettled(t, c, web.Name, 2, 90*time.Second)
	seen := watch.finish()
	d := waitDeployment(t, c, web.Name, 10*time.Second)
	if d.Status != "successful" {
		t.Errorf("deployment %s: %q (%s), want successful", d.ID, d.Status, d.Description)
	}
	if n := len(seen[2]); n != web.Replicas {
		t.Errorf("%d v2 tasks were seen during the rollout, want %d (placed twice?): %v",
			n, web.Replicas, sortedIDs(seen[2]))
	}
	if n := len(final.Live()); n != web.Replicas {
		t.Errorf("%d live tasks of %s at the end, want %d", n, web.Name, web.Replicas)
	}
	checkOneShots(t, c, d.ID, web.Image, web.Replicas)
	logEngines(t, c)

	checkAcknowledged(t, c, acked)
}

// Issue 4, fault tests: a cluster of five managers loses two of them,
// the leader among them, to SIGKILL in the middle of a rolling update.
// The three left elect a leader and finish the deployment (successful,
// every replica on v2 and answering with its version, each replacement
// placed once); a write to them is acknowledged meanwhile. The two come
// back on their data dirs and catch up: followers with the leader's
// applied index and every acknowledged write in their own replica, their
// engines off. It ends with exactly the replicas running in the workers'
// containerds, no task twice, and every acknowledged write present.
func TestFiveManagersLoseTwo(t *testing.T) {
	t.Parallel()
	c := startOwnCluster(t, 5, 2, loseTwoSubnet)

	web := cluster.WebApp{Name: "five", Image: c.Image("v1"), Replicas: 4,
		BatchSize: 1, MinHealthyTime: "2s"}
	ackDeploy(t, c, web)
	waitSettled(t, c, web.Name, 1, 60*time.Second)

	web.Image = c.Image("v2")
	watch := watchRollout(c, web.Name)
	ackDeploy(t, c, web)
	acked := []acknowledgedApp{{web, 2, "v2"}}
	firstHealthy(t, c, web.Name, 2)

	// The leader and the last other manager in name order.
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	victims := []string{leader}
	managers := c.Managers()
	for i := len(managers) - 1; i >= 0; i-- {
		if managers[i].Name != leader {
			victims = append(victims, managers[i].Name)
			break
		}
	}
	if d := latestDeployment(t, c, web.Name); d == nil || d.Status != "running" {
		t.Fatalf("the rollout of %s finished before the kill (%+v)", web.Name, d)
	}
	for _, v := range victims {
		if err := c.Kill(v); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	newLeader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatalf("no leader among the three left after killing %v: %v", victims, err)
	}
	t.Logf("killed %v mid-rollout; %s leads after %s", victims, newLeader, since(killed))

	// A write the three acknowledge while two are down.
	ack := cluster.WebApp{Name: "five-ack", Image: c.Image("v1"), Replicas: 1}
	ackDeploy(t, c, ack)
	acked = append(acked, acknowledgedApp{ack, 1, "v1"})

	final := waitSettled(t, c, web.Name, 2, 90*time.Second)
	seen := watch.finish()
	d := waitDeployment(t, c, web.Name, 10*time.Second)
	if d.Status != "successful" {
		t.Errorf("deployment %s: %q (%s), want successful", d.ID, d.Status, d.Description)
	}
	if n := len(seen[2]); n != web.Replicas {
		t.Errorf("%d v2 tasks were seen during the rollout, want %d (placed twice?): %v",
			n, web.Replicas, sortedIDs(seen[2]))
	}
	if n := len(final.Live()); n != web.Replicas {
		t.Errorf("%d live tasks of %s at the end, want %d", n, web.Name, web.Replicas)
	}
	waitAnswers(t, c, web.Name, "v2", 30*time.Second)
	t.Logf("the three left finished the rollout %s after the kill", since(killed))

	// The two come back and catch up with the leader.
	for _, v := range victims {
		if err := c.Restart(v); err != nil {
			t.Fatal(err)
		}
	}
	restarted := time.Now()
	leader, err = c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := c.Peers(leader)
	if err != nil {
		t.Fatal(err)
	}
	mark := peers[leader].AppliedIndex
	for _, v := range victims {
		wait(t, 60*time.Second, v+" caught up with the leader", func() error {
			peers, err := c.Peers(v)
			if err != nil {
				return err
			}
			p := peers[v]
			if p.State != "follower" || p.AppliedIndex < mark || p.EngineEnabled {
				return fmt.Errorf("%s is %s at applied index %d (leader %s was at %d), engine_enabled=%t",
					v, p.State, p.AppliedIndex, leader, mark, p.EngineEnabled)
			}
			return nil
		})
	}
	t.Logf("%v caught up with %s at index %d %s after their restart",
		victims, leader, mark, since(restarted))
	wait(t, 30*time.Second, "only the leader's engine runs", func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		return c.EngineOnlyOn(l)
	})
	checkOneShots(t, c, d.ID, web.Image, web.Replicas)
	logEngines(t, c)

	checkAcknowledged(t, c, acked)
}

// ackDeploy deploys a until the cluster acknowledges it, asking again
// while it answers with an error (an election under load): a spec that
// is already stored comes back unchanged, so a retry never makes a
// second version.
func ackDeploy(t *testing.T, c *cluster.Cluster, a cluster.WebApp) {
	t.Helper()
	spec := a.YAML()
	wait(t, 30*time.Second, "app deploy "+a.Name+" acknowledged", func() error {
		out, err := c.Deploy(spec)
		if err != nil {
			return fmt.Errorf("%w (output %q)", err, out)
		}
		return nil
	})
}

// latestDeployment returns the latest deployment of app, nil if none,
// waiting for the cluster to answer.
func latestDeployment(t *testing.T, c *cluster.Cluster, app string) *cluster.Deployment {
	t.Helper()
	var d *cluster.Deployment
	wait(t, 30*time.Second, "app status "+app, func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		d = st.Deployment
		return nil
	})
	return d
}

// startOwnCluster starts a cluster of the test's own on subnet and stops
// it when the test ends.
func startOwnCluster(t *testing.T, managers, workers, subnet int,
	managerArgs ...string) *cluster.Cluster {
	t.Helper()
	c, err := cluster.Start(cluster.Config{
		Binary:      binary,
		Managers:    managers,
		Workers:     workers,
		Subnet:      subnet,
		Log:         harnessLog,
		ManagerArgs: managerArgs,
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
	t.Cleanup(func() {
		if t.Failed() {
			logLeadership(t, c)
		}
	})
	return c
}

// logLeadership logs, for a failure report, each manager's lines about
// its starts, leadership and its rollout engine, which the raft errors
// about dead peers push out of the log tails.
func logLeadership(t *testing.T, c *cluster.Cluster) {
	for _, m := range c.Managers() {
		all, err := c.Grep(m.Name, "")
		if err != nil {
			t.Logf("%s: %v", m.Name, err)
			continue
		}
		var lines []string
		for _, l := range all {
			for _, sub := range []string{"=== harness", "leadership", "manager.deploy"} {
				if strings.Contains(l, sub) {
					lines = append(lines, l)
					break
				}
			}
		}
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		t.Logf("%s: starts, leadership and engine:\n%s", m.Name, strings.Join(lines, "\n"))
	}
}

// waitPlaced waits until app has at least n live tasks of version.
func waitPlaced(t *testing.T, c *cluster.Cluster, app string, version int64, n int) {
	t.Helper()
	what := fmt.Sprintf("%d tasks of %s version %d placed", n, app, version)
	wait(t, 60*time.Second, what, func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		if got := len(tasksOf(st, version)); got < n {
			return fmt.Errorf("%d live tasks of %s version %d", got, app, version)
		}
		return nil
	})
}

// nextManager is the manager after current in name order, wrapping.
func nextManager(c *cluster.Cluster, current string) string {
	ms := c.Managers()
	for i, m := range ms {
		if m.Name == current {
			return ms[(i+1)%len(ms)].Name
		}
	}
	return ms[0].Name
}

// watchEngines watches `raft peers` through the leader for
// engineWindow: every follower's engine stays off with its steps and
// proposals unchanged, the leader's stays on and its steps go on. An
// election in the window (a new term: the managers are slow to answer
// under load) voids it, and it starts again under the new leader; a
// sample where a follower did not answer is not counted, and at least
// three must be.
func watchEngines(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := engineWindow1(t, c)
		if err == nil {
			return
		}
		if !errors.Is(err, cluster.ErrNewTerm) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("engine window void, starting again: %v", err)
	}
}

// engineWindow1 is one window of watchEngines under the current leader.
func engineWindow1(t *testing.T, c *cluster.Cluster) error {
	t.Helper()
	var leader string
	err := cluster.WaitFor(30*time.Second, func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		leader = l
		return c.EngineOnlyOn(leader)
	})
	if err != nil {
		return err
	}
	before, err := c.Peers(leader)
	if err != nil {
		return err
	}
	last, samples := before, 0
	tick := time.NewTicker(cluster.PollInterval)
	defer tick.Stop()
	for end := time.Now().Add(engineWindow); time.Now().Before(end); <-tick.C {
		now, err := c.Peers(leader)
		if err != nil {
			return err
		}
		if err := cluster.EngineStill(leader, before, now); err != nil {
			return err
		}
		if !unreachable(now) {
			last = now
			samples++
		}
	}
	if samples < 3 {
		return fmt.Errorf("only %d samples of raft peers with every follower answering in %s",
			samples, engineWindow)
	}
	checkEngineMetrics(t, c, leader, last)
	if b, l := before[leader].EngineSteps, last[leader].EngineSteps; l <= b {
		return fmt.Errorf("leader %s's engine steps went from %d to %d in %s, want more",
			leader, b, l, engineWindow)
	}
	t.Logf("over %s (%d samples) the followers' engines stood still; leader %s: steps %d -> %d, proposals %d -> %d",
		engineWindow, samples, leader, before[leader].EngineSteps, last[leader].EngineSteps,
		before[leader].EngineProposals, last[leader].EngineProposals)
	return nil
}

// checkEngineMetrics checks that every manager's /metrics says what its
// raft peers entry in peers said: the engine on the leader only, and a
// follower's steps and proposals where they stood.
func checkEngineMetrics(t *testing.T, c *cluster.Cluster, leader string, peers map[string]cluster.Peer) {
	t.Helper()
	for _, m := range c.Managers() {
		if !c.Running(m.Name) {
			continue
		}
		got, err := c.Metrics(m.Name)
		if err != nil {
			t.Fatal(err)
		}
		enabled := got["hivemind_engine_enabled"]
		if want := oneIf(m.Name == leader); enabled != want {
			t.Errorf("%s: hivemind_engine_enabled %v, want %v", m.Name, enabled, want)
		}
		if m.Name == leader {
			continue
		}
		p := peers[m.Name]
		steps, props := got["hivemind_engine_steps_total"], got["hivemind_engine_proposals_total"]
		if steps != float64(p.EngineSteps) || props != float64(p.EngineProposals) {
			t.Errorf("%s: /metrics has engine steps %v and proposals %v, raft peers said %d and %d",
				m.Name, steps, props, p.EngineSteps, p.EngineProposals)
		}
	}
}

// oneIf is 1 for true, 0 for false, as a gauge shows a flag.
func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unreachable reports whether a manager in peers did not answer.
func unreachable(peers map[string]cluster.Peer) bool {
	for _, p := range peers {
		if p.State == "unreachable" {
			return true
		}
	}
	return false
}

// logEngines logs every manager's engine state and counters, as the
// leader's raft peers shows them.
func logEngines(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	leader, err := c.Leader()
	if err != nil {
		t.Logf("engines: no leader: %v", err)
		return
	}
	peers, err := c.Peers(leader)
	if err != nil {
		t.Logf("engines: raft peers through %s: %v", leader, err)
		return
	}
	var lines []string
	for _, m := range c.Managers() {
		p := peers[m.Name]
		lines = append(lines, fmt.Sprintf("%s %s term %d engine_enabled=%t steps=%d proposals=%d",
			m.Name, p.State, p.Term, p.EngineEnabled, p.EngineSteps, p.EngineProposals))
	}
	t.Logf("engines: %s", strings.Join(lines, "; "))
}

// managerLines returns the lines over every manager's log that
// contain all of subs, each prefixed with the manager's name.
func managerLines(t *testing.T, c *cluster.Cluster, subs ...string) []string {
	t.Helper()
	var found []string
	for _, m := range c.Managers() {
		lines, err := c.Grep(m.Name, subs[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			all := true
			for _, s := range subs[1:] {
				all = all && strings.Contains(l, s)
			}
			if all {
				found = append(found, m.Name+": "+l)
			}
		}
	}
	return found
}

// checkDoneOnce checks that a one-shot action of whoever led was
// recorded once over the managers' logs: one line with done, or, when
// the leader that decided it lost its term (or the reply) while
// proposing it and the entry committed all the same, none with done and
// at least one with unknown. Two lines with done mean two leaders each
// committed it.
func checkDoneOnce(t *testing.T, c *cluster.Cluster, done, unknown []string) {
	t.Helper()
	d := managerLines(t, c, done...)
	switch {
	case len(d) == 1:
	case len(d) == 0 && len(managerLines(t, c, unknown...)) > 0:
		t.Logf("%q: its proposal's outcome was unknown where it was decided:\n%s",
			strings.Join(done, " ... "), strings.Join(managerLines(t, c, unknown...), "\n"))
	default:
		t.Errorf("%q logged %d times over the managers, want once (or an unknown outcome):\n%s",
			strings.Join(done, " ... "), len(d), strings.Join(d, "\n"))
	}
}

// checkOneShots checks the engine's one-shot actions: the cluster meta
// created once, the deployment's finish recorded once, and each of the
// rollout's replicas started once from image.
func checkOneShots(t *testing.T, c *cluster.Cluster, deployment, image string, replicas int) {
	t.Helper()
	checkDoneOnce(t, c, []string{"cluster meta created"},
		[]string{"cluster meta proposed, outcome unknown"})
	id := "deployment=" + deployment
	checkDoneOnce(t, c, []string{"deployment finished", id},
		[]string{"deployment finish proposed, outcome unknown", id})
	checkStartedOnce(t, c, image, replicas)
}

// checkStartedOnce checks, in the workers' logs, that exactly want
// containers were started from image and none of them twice: the
// workers' trace of each placement of a rollout.
func checkStartedOnce(t *testing.T, c *cluster.Cluster, image string, want int) {
	t.Helper()
	starts := map[string][]string{} // task ID -> workers that started it
	for _, w := range c.Workers() {
		lines, err := c.Grep(w.Name, "container started")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if !strings.Contains(l, "image="+image) {
				continue
			}
			_, rest, ok := strings.Cut(l, "task_id=")
			if !ok {
				t.Fatalf("%s: no task_id in %q", w.Name, l)
			}
			id, _, _ := strings.Cut(rest, " ")
			starts[id] = append(starts[id], w.Name)
		}
	}
	for id, ws := range starts {
		if len(ws) != 1 {
			t.Errorf("task %s of %s started %d times, on %v", id, image, len(ws), ws)
		}
	}
	if len(starts) != want {
		t.Errorf("%d tasks of %s started (%v), want %d", len(starts), image, starts, want)
	}
}

// acknowledgedApp is an app deploy the cluster acknowledged, the version
// it made and the image version ("v1", "v2") its tasks answer with.
type acknowledgedApp struct {
	app     cluster.WebApp
	version int64
	image   string
}

// checkAcknowledged is the end check of a fault test: every acknowledged
// app settles on its version with exactly its replicas, each running
// once in the workers' containerds and answering; no other container
// runs; and every running manager's own replica holds exactly these apps
// at these versions.
func checkAcknowledged(t *testing.T, c *cluster.Cluster, acked []acknowledgedApp) {
	t.Helper()
	acked = append([]acknowledgedApp(nil), acked...)
	sort.Slice(acked, func(i, j int) bool { return acked[i].app.Name < acked[j].app.Name })
	var want []string
	for _, a := range acked {
		st := waitSettled(t, c, a.app.Name, a.version, 60*time.Second)
		checkRunningOnce(t, c, st, a.app.Replicas)
		waitAnswers(t, c, a.app.Name, a.image, 30*time.Second)
		want = append(want, fmt.Sprintf("%s|%d", a.app.Name, a.version))
	}
	wait(t, 30*time.Second, "workers' containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})

	dir := t.TempDir()
	for _, m := range c.Managers() {
		wait(t, 30*time.Second, m.Name+"'s own replica holds every acknowledged app", func() error {
			got, err := localApps(c, m.Name, filepath.Join(dir, m.Name+".db"))
			if err != nil {
				return err
			}
			if got != strings.Join(want, "\n") {
				return fmt.Errorf("%s's replica has apps %q, want %q", m.Name, got, strings.Join(want, "\n"))
			}
			return nil
		})
	}
}

// sortedIDs lists the keys of a set, sorted.
func sortedIDs(set map[string]bool) []string {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
