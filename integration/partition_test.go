package integration

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// partitionSubnet is the loopback subnet of TestLeaderPartition's
// cluster, and partitionChain the iptables chain of its own.
const (
	partitionSubnet = 15
	partitionChain  = "HM-TEST-15"
	// partitionGIDBase + i is the group ID manager mi runs under, so that
	// the firewall can tell the connections it dials apart.
	partitionGIDBase = 41510
)

// raftView is `cluster status -o json` with the fields of each manager's
// own Raft view that this test reads.
type raftView struct {
	Leader   string `json:"leader"`
	Managers []struct {
		Name         string `json:"name"`
		State        string `json:"state"`
		Term         uint64 `json:"term"`
		AppliedIndex uint64 `json:"applied_index"`
	} `json:"managers"`
}

// self returns the state manager reports for itself in v.
func (v *raftView) self(manager string) string {
	for _, m := range v.Managers {
		if m.Name == manager {
			return m.State
		}
	}
	return ""
}

// Issue 4, fault tests: partition the leader from both other managers in
// the middle of a rolling update (workers still reach every manager). The
// old leader steps down, the majority elects a leader and finishes the
// rollout; a write sent to the old leader during the partition is not
// acknowledged and never becomes visible; after healing the old leader
// follows the new one with the same state. It ends with exactly the
// replicas running in the workers' containerds, no task twice, and every
// acknowledged write present.
func TestLeaderPartition(t *testing.T) {
	t.Parallel()
	fw, removeFirewall := newFirewall(t, partitionChain)

	gids := map[string]int{}
	for i := 1; i <= 3; i++ {
		gids[fmt.Sprintf("m%d", i)] = partitionGIDBase + i
	}
	bin, err := cluster.GroupWrapper(t.TempDir(), binary, gids)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(cluster.Config{
		Binary:   bin,
		Managers: 3,
		Workers:  2,
		Subnet:   partitionSubnet,
		Log:      harnessLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Heal first, so that the cluster removes its apps normally.
		removeFirewall()
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	onFailure(t, c)

	web := cluster.WebApp{Name: "web", Image: c.Image("v1"), Replicas: 4,
		BatchSize: 1, MinHealthyTime: "1s"}
	deploy(t, c, web.YAML())
	waitSettled(t, c, web.Name, 1, 60*time.Second)

	// The hardest leader to lose is m1: every worker registered there
	// first and keeps its streams on it.
	if err := cluster.WaitFor(30*time.Second, func() error {
		leader, err := c.Leader()
		if err != nil || leader == "m1" {
			return err
		}
		if _, err := c.CLI("raft", "transfer-leadership", "m1"); err != nil {
			return err
		}
		return fmt.Errorf("%s leads, not m1", leader)
	}); err != nil {
		t.Fatalf("make m1 the leader: %v", err)
	}

	web.Image = c.Image("v2")
	deploy(t, c, web.YAML())
	firstHealthy(t, c, web.Name, 2)

	old, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	oldM, err := c.Member(old)
	if err != nil {
		t.Fatal(err)
	}
	var peers []*cluster.Member
	for _, m := range c.Managers() {
		if m.Name != old {
			peers = append(peers, m)
		}
	}
	if err := c.CutOffManager(fw, old, gids); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	t.Logf("partitioned leader %s (%s) from %s and %s:\n%s",
		old, oldM.IP, peers[0].Name, peers[1].Name, fw.Rules())

	// A write to the old leader right after the cut: it must not be
	// acknowledged, whether the old leader still thinks it leads (the
	// entry never commits) or has stepped down (no leader to forward to).
	lost := cluster.WebApp{Name: "lost", Image: c.Image("v1"), Replicas: 1}
	out, err := c.DeployAt(old, lost.YAML())
	if err == nil {
		t.Errorf("old leader %s acknowledged app deploy %s during the partition: %q",
			old, lost.Name, out)
	} else {
		t.Logf("write to old leader %s during the partition refused after %s: %v",
			old, since(cut), err)
	}

	wait(t, 5*time.Second, "old leader "+old+" stepped down", func() error {
		var v raftView
		if err := c.JSONAt(old, &v, "cluster", "status"); err != nil {
			return err
		}
		if v.Leader == old || v.self(old) == "leader" {
			return fmt.Errorf("%s still says leader %q, its own state %q", old, v.Leader, v.self(old))
		}
		return nil
	})
	t.Logf("%s stepped down %s after the cut", old, since(cut))

	peer := peers[0].Name
	var elected string
	wait(t, 30*time.Second, "the majority elected a new leader", func() error {
		var v raftView
		if err := c.JSONAt(peer, &v, "cluster", "status"); err != nil {
			return err
		}
		if v.Leader == "" || v.Leader == old {
			return fmt.Errorf("%s sees leader %q", peer, v.Leader)
		}
		elected = v.Leader
		return nil
	})
	t.Logf("%s leads the majority %s after the cut", elected, since(cut))

	// A write the majority acknowledges during the partition.
	acked := cluster.WebApp{Name: "acked", Image: c.Image("v1"), Replicas: 1}
	if out, err := c.DeployAt(peer, acked.YAML()); err != nil {
		t.Fatalf("app deploy %s at %s during the partition: %v (output %q)", acked.Name, peer, err, out)
	}

	wait(t, 60*time.Second, "the majority finished the rollout of "+web.Name, func() error {
		st, err := appStatusAt(c, peer, web.Name)
		if err != nil {
			return err
		}
		return st.Settled(2)
	})
	st, err := appStatusAt(c, peer, web.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d := st.Deployment; d == nil || d.Status != "successful" || d.ToVersion != 2 {
		t.Errorf("deployment of %s after the rollout: %+v, want successful to v2", web.Name, d)
	}
	t.Logf("rollout finished by the majority %s after the cut", since(cut))

	if err := fw.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()

	// The old leader follows: its own cluster status names the leader the
	// majority names, and its own replica (its snapshot) holds the same
	// apps and versions, without the write it refused.
	var leader string
	wait(t, 30*time.Second, old+" follows the majority's leader after healing", func() error {
		var v, vp raftView
		if err := c.JSONAt(peer, &vp, "cluster", "status"); err != nil {
			return err
		}
		if err := c.JSONAt(old, &v, "cluster", "status"); err != nil {
			return err
		}
		if vp.Leader == "" || vp.Leader == old || v.Leader != vp.Leader {
			return fmt.Errorf("%s sees leader %q, %s sees %q", old, v.Leader, peer, vp.Leader)
		}
		if s := v.self(old); s != "follower" {
			return fmt.Errorf("%s is %q", old, s)
		}
		leader = vp.Leader
		return nil
	})
	if leader != elected {
		t.Logf("leadership moved from %s to %s on healing", elected, leader)
	}
	t.Logf("%s follows %s %s after healing", old, leader, since(healed))

	want := fmt.Sprintf("%s|1\n%s|2", acked.Name, web.Name)
	dir := t.TempDir()
	wait(t, 30*time.Second, old+"'s own replica holds exactly the acknowledged apps", func() error {
		got, err := localApps(c, old, filepath.Join(dir, old+".db"))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s's snapshot has apps %q, want %q", old, got, want)
		}
		return nil
	})
	for _, m := range c.Managers() {
		if _, err := appStatusAt(c, m.Name, lost.Name); err == nil {
			t.Errorf("app %s, refused during the partition, is visible through %s", lost.Name, m.Name)
		} else if !errors.As(err, new(*cluster.CLIError)) {
			t.Errorf("app status %s at %s: %v", lost.Name, m.Name, err)
		}
	}

	// End checks: every acknowledged write is there, exactly the
	// replicas run in the workers' containerds and no task runs twice.
	final := waitSettled(t, c, web.Name, 2, 30*time.Second)
	for _, task := range final.Live() {
		if task.Image != c.Image("v2") {
			t.Errorf("task %s of %s runs %s, want %s", task.ID, web.Name, task.Image, c.Image("v2"))
		}
	}
	waitSettled(t, c, acked.Name, 1, 30*time.Second)
	waitAnswers(t, c, web.Name, "v2", 30*time.Second)
	waitAnswers(t, c, acked.Name, "v1", 30*time.Second)
	wait(t, 30*time.Second, "workers' containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})
	checkRunningOnce(t, c, final, web.Replicas)
}

// appStatusAt is `app status NAME` through one manager.
func appStatusAt(c *cluster.Cluster, manager, app string) (*cluster.AppStatus, error) {
	var st cluster.AppStatus
	return &st, c.JSONAt(manager, &st, "app", "status", app)
}

// localApps saves manager's own replica with `snapshot save` to file and
// returns its apps as "name|version" lines, sorted.
func localApps(c *cluster.Cluster, manager, file string) (string, error) {
	if out, err := c.CLIAt(manager, "snapshot", "save", file); err != nil {
		return "", fmt.Errorf("snapshot save at %s: %w (output %q)", manager, err, out)
	}
	out, err := exec.Command("sqlite3", file,
		"select name || '|' || version from apps order by name").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sqlite3 %s: %w: %s", file, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// checkRunningOnce checks that the live tasks of st are replicas distinct
// tasks, each with a running process in exactly one worker's containerd,
// and that no container ID is in two containerds.
func checkRunningOnce(t *testing.T, c *cluster.Cluster, st *cluster.AppStatus, replicas int) {
	t.Helper()
	where := map[string][]string{} // container ID -> workers running it
	for _, w := range c.Workers() {
		pids, err := c.TaskPIDs(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		for id, pid := range pids {
			if pid != 0 {
				where[id] = append(where[id], w.Name)
			}
		}
	}
	for id, ws := range where {
		if len(ws) > 1 {
			t.Errorf("task %s runs on %v", id, ws)
		}
	}
	var ids []string
	seen := map[string]bool{}
	for _, task := range st.Live() {
		if seen[task.ID] {
			t.Errorf("app %s lists task %s twice", st.Name, task.ID)
		}
		seen[task.ID] = true
		ids = append(ids, task.ID)
		if ws := where[task.ID]; len(ws) != 1 || ws[0] != task.Node {
			t.Errorf("task %s of %s, assigned to %s, runs on %v", task.ID, st.Name, task.Node, ws)
		}
	}
	sort.Strings(ids)
	if len(ids) != replicas {
		t.Errorf("app %s has %d live tasks %v, want %d", st.Name, len(ids), ids, replicas)
	}
}

// since is the time since t, rounded for a log line.
func since(t time.Time) time.Duration {
	return time.Since(t).Round(time.Millisecond)
}
