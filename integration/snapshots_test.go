package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// snapshotsSubnet is the loopback subnet of TestRestartWithSnapshots's
// cluster.
const snapshotsSubnet = 16

// snapshotWrites is how many Raft entries the test writes on top of the
// deploys: over three times the snapshot threshold, so that every manager
// has taken snapshots before the kill and restores one when it starts.
const snapshotWrites = 320

// Issue 4, fault tests: stop all three managers at once and start them
// again, with a snapshot taken every 100 entries. Each manager restores
// its latest snapshot and replays the log after it: every app, version
// and task is back, the tasks run on in the same processes, each
// manager's applied index ends at or past where it was, and the cluster
// acknowledges a new write that the workers carry out.
func TestRestartWithSnapshots(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:      binary,
		Managers:    3,
		Workers:     2,
		Subnet:      snapshotsSubnet,
		Log:         harnessLog,
		ManagerArgs: []string{"--snapshot-threshold", "100", "--snapshot-interval", "1s"},
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
	t0 := time.Now()

	// A real app rolled from v1 to v2, and an app of no replicas that
	// takes the filler writes.
	web := cluster.WebApp{Name: "snap-web", Image: c.Image("v1"), Replicas: 2}
	filler := cluster.WebApp{Name: "snap-filler", Image: c.Image("v1"), Replicas: 0}
	deploy(t, c, web.YAML())
	deploy(t, c, filler.YAML())
	waitSettled(t, c, web.Name, 1, 60*time.Second)
	web.Image = c.Image("v2")
	deploy(t, c, web.YAML())
	waitSettled(t, c, web.Name, 2, 60*time.Second)
	if d := waitDeployment(t, c, web.Name, 10*time.Second); d.Status != "successful" {
		t.Fatalf("deployment %s of %s: %q (%s), want successful", d.ID, web.Name, d.Status, d.Description)
	}
	// The v1 tasks, stopped, are deleted by the leader a moment later:
	// wait for that, so that the status compared across the restart is
	// one nothing is still changing.
	wait(t, 30*time.Second, "app "+web.Name+" lists only its live v2 tasks", func() error {
		st, err := c.AppStatus(web.Name)
		if err != nil {
			return err
		}
		if err := st.Settled(2); err != nil {
			return err
		}
		if len(st.Tasks) != len(st.Live()) {
			return fmt.Errorf("app %s still lists finished tasks: %+v", web.Name, st.Tasks)
		}
		return nil
	})
	t.Logf("app %s rolled to v2 after %s", web.Name, time.Since(t0).Round(time.Millisecond))

	// The filler writes: each scale is one Raft entry. A write that is
	// refused (a leader change under load) is tried again on the leader
	// of the moment; only acknowledged ones count.
	tw := time.Now()
	acked, leader := 0, ""
	wait(t, 30*time.Second, fmt.Sprintf("%d scale writes acknowledged", snapshotWrites), func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		leader = l
		m, err := c.Member(l)
		if err != nil {
			return err
		}
		for acked < snapshotWrites {
			if err := snapScale(m, filler.Name, 0); err != nil {
				return fmt.Errorf("write %d of %d: %w", acked+1, snapshotWrites, err)
			}
			acked++
		}
		return nil
	})
	t.Logf("%d scale writes acknowledged (last through %s) in %s", snapshotWrites, leader,
		time.Since(tw).Round(time.Millisecond))

	wait(t, 30*time.Second, "every manager has a Raft snapshot on disk", func() error {
		for _, m := range c.Managers() {
			snaps, err := snapFiles(m)
			if err != nil {
				return err
			}
			if len(snaps) == 0 {
				return fmt.Errorf("manager %s: no snapshot in %s", m.Name,
					filepath.Join(m.DataDir, "raft", "snapshots"))
			}
		}
		return nil
	})
	for _, m := range c.Managers() {
		snaps, _ := snapFiles(m)
		t.Logf("manager %s: snapshots %v", m.Name, snaps)
	}

	// What must survive: the apps' status, the tasks' processes, and each
	// manager's applied index.
	before := map[string]*cluster.AppStatus{}
	for _, name := range []string{web.Name, filler.Name} {
		st, err := c.AppStatus(name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = st
	}
	if err := before[web.Name].Settled(2); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	pids := snapPIDs(t, c, before[web.Name])
	applied := map[string]uint64{}
	for _, m := range c.Managers() {
		idx, err := snapAppliedIndex(c, m.Name)
		if err != nil {
			t.Fatal(err)
		}
		applied[m.Name] = idx
	}
	t.Logf("before the kill: applied indexes %v, %s tasks %v", applied, web.Name, pids)

	// SIGKILL all three at once.
	var wg sync.WaitGroup
	errs := make([]error, len(c.Managers()))
	for i, m := range c.Managers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Kill(m.Name)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range c.Managers() {
			if !c.Running(m.Name) {
				if err := c.Restart(m.Name); err != nil {
					t.Error(err)
				}
			}
		}
	})
	tr := time.Now()
	for _, m := range c.Managers() {
		if err := c.Restart(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	newLeader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatalf("no leader after restarting every manager: %v", err)
	}
	t.Logf("%s leads %s after the restart of every manager", newLeader,
		time.Since(tr).Round(time.Millisecond))

	// Each manager started from its latest snapshot, then the log after it.
	for _, m := range c.Managers() {
		wait(t, 10*time.Second, "manager "+m.Name+" restored a snapshot at start", func() error {
			line, err := snapRestoredLine(m)
			if err != nil {
				return err
			}
			t.Logf("manager %s: %s", m.Name, line)
			return nil
		})
	}

	// Raft's own applied index restarts at the snapshot's and climbs as
	// the log after it is committed again: each manager must get back to
	// where it was, or past it.
	for _, m := range c.Managers() {
		wait(t, 30*time.Second, "manager "+m.Name+" applied index back to where it was", func() error {
			idx, err := snapAppliedIndex(c, m.Name)
			if err != nil {
				return err
			}
			if idx < applied[m.Name] {
				return fmt.Errorf("manager %s: applied index %d, was %d before the kill",
					m.Name, idx, applied[m.Name])
			}
			return nil
		})
	}

	// Every app, version and task is there, as it was.
	for _, name := range []string{web.Name, filler.Name} {
		want := snapView(before[name])
		wait(t, 30*time.Second, "app "+name+" as it was before the kill", func() error {
			st, err := c.AppStatus(name)
			if err != nil {
				return err
			}
			if got := snapView(st); !reflect.DeepEqual(got, want) {
				return fmt.Errorf("app %s:\n got %+v\nwant %+v", name, got, want)
			}
			return nil
		})
	}
	after := snapPIDs(t, c, before[web.Name])
	for id, p := range pids {
		if after[id] != p {
			t.Errorf("task %s ran as pid %d before the kill, %d after: replaced or restarted", id, p, after[id])
		}
	}

	// A new write is acknowledged, and carried out.
	if out, err := c.CLI("app", "scale", web.Name, "3"); err != nil {
		t.Fatalf("app scale %s 3 after the restart: %v (output %q)", web.Name, err, out)
	}
	st := waitSettled(t, c, web.Name, 2, 60*time.Second)
	if st.Replicas != 3 {
		t.Fatalf("app %s: replicas %d after scaling to 3", web.Name, st.Replicas)
	}
	for _, task := range before[web.Name].Live() {
		if !snapHasTask(st, task.ID) {
			t.Errorf("task %s on %s gone after the scale up: %+v", task.ID, task.Node, st.Live())
		}
	}

	// Exactly the desired containers, each task once.
	wait(t, 30*time.Second, "workers' containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})
	running := map[string]string{}
	for _, w := range c.Workers() {
		p, err := c.TaskPIDs(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		for id, pid := range p {
			if pid == 0 {
				continue
			}
			if other, ok := running[id]; ok {
				t.Errorf("task %s runs on %s and on %s", id, other, w.Name)
			}
			running[id] = w.Name
		}
	}
	var ids []string
	for _, task := range st.Live() {
		if _, ok := running[task.ID]; !ok {
			t.Errorf("task %s on %s has no running container", task.ID, task.Node)
		}
		ids = append(ids, task.ID)
	}
	if len(running) != 3 || len(ids) != 3 {
		t.Errorf("%d containers running %v for tasks %v, want 3", len(running), running, ids)
	}
	waitAnswers(t, c, web.Name, "v2", 10*time.Second)
	t.Logf("done %s after the cluster was up", time.Since(t0).Round(time.Millisecond))
}

// snapHTTP is the client of snapScale: a write not answered in time
// counts as not acknowledged.
var snapHTTP = &http.Client{Timeout: 10 * time.Second}

// snapScale sets an app's replicas through the REST API of m: one Raft
// entry, acknowledged once committed and applied.
func snapScale(m *cluster.Member, app string, replicas int) error {
	body := fmt.Sprintf(`{"replicas":%d}`, replicas)
	resp, err := snapHTTP.Post(m.Addr()+"/v1/apps/"+app+"/scale", "application/json",
		bytes.NewBufferString(body))
	if err != nil {
		return fmt.Errorf("scale %s at %s: %w", app, m.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scale %s at %s: %s: %s", app, m.Name, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// snapFiles lists the complete Raft snapshots in a manager's data dir
// (a directory with its meta.json; not one still being written).
func snapFiles(m *cluster.Member) ([]string, error) {
	dir := filepath.Join(m.DataDir, "raft", "snapshots")
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// snapRestoredLine returns the line of m's log, since its last start,
// where Raft says it restored a snapshot.
func snapRestoredLine(m *cluster.Member) (string, error) {
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		return "", err
	}
	log := string(b)
	if i := strings.LastIndex(log, "=== harness: start "+m.Name+" "); i >= 0 {
		log = log[i:]
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "restored from snapshot") {
			return strings.TrimSpace(line), nil
		}
	}
	return "", fmt.Errorf("manager %s: no \"restored from snapshot\" in its log since its last start", m.Name)
}

// snapIndexes is the part of `cluster status -o json` with each
// manager's applied index.
type snapIndexes struct {
	Managers []struct {
		Name         string      `json:"name"`
		State        string      `json:"state"`
		AppliedIndex cluster.Num `json:"applied_index"`
	} `json:"managers"`
}

// snapAppliedIndex asks manager for its own Raft applied index.
func snapAppliedIndex(c *cluster.Cluster, manager string) (uint64, error) {
	var st snapIndexes
	if err := c.JSONAt(manager, &st, "cluster", "status"); err != nil {
		return 0, err
	}
	for _, m := range st.Managers {
		if m.Name == manager {
			return uint64(m.AppliedIndex), nil
		}
	}
	return 0, fmt.Errorf("manager %s not in its own cluster status", manager)
}

// snapTaskView is what of a task must survive a restart of the managers.
type snapTaskView struct {
	ID, Node, Image, State string
	Version                int64
	Healthy                bool
	Addresses              map[string]string
}

// snapAppView is what of an app's status must survive a restart of the
// managers.
type snapAppView struct {
	Version, Replicas int64
	Deployment        cluster.Deployment
	Tasks             []snapTaskView
}

// snapView is the part of st compared across the restart, tasks by ID.
func snapView(st *cluster.AppStatus) snapAppView {
	v := snapAppView{Version: int64(st.Version), Replicas: int64(st.Replicas), Tasks: []snapTaskView{}}
	if st.Deployment != nil {
		v.Deployment = *st.Deployment
	}
	for _, task := range st.Tasks {
		v.Tasks = append(v.Tasks, snapTaskView{ID: task.ID, Node: task.Node, Image: task.Image,
			State: task.State, Version: int64(task.Version), Healthy: task.Healthy,
			Addresses: task.Addresses})
	}
	sort.Slice(v.Tasks, func(i, j int) bool { return v.Tasks[i].ID < v.Tasks[j].ID })
	return v
}

// snapPIDs maps each live task of st to the PID of its container on its
// worker (0 if none runs).
func snapPIDs(t *testing.T, c *cluster.Cluster, st *cluster.AppStatus) map[string]uint32 {
	t.Helper()
	out := map[string]uint32{}
	for _, task := range st.Live() {
		p, err := c.TaskPIDs(task.Node)
		if err != nil {
			t.Fatal(err)
		}
		out[task.ID] = p[task.ID]
		if p[task.ID] == 0 {
			t.Fatalf("task %s of %s on %s: no running container", task.ID, st.Name, task.Node)
		}
	}
	return out
}

// snapHasTask reports whether st lists a live task id.
func snapHasTask(st *cluster.AppStatus, id string) bool {
	for _, task := range st.Live() {
		if task.ID == id {
			return true
		}
	}
	return false
}
