package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// disasterSubnet is the loopback subnet of TestDisasterRecovery's cluster.
const disasterSubnet = 17

// drIngress is the ingress port of the web app in TestDisasterRecovery.
const drIngress = 18170

// Issue 4, operations: disaster recovery. Back up a cluster with two apps
// (web at v2 after v1, with an ingress port, and api), restore the
// backup into it at once (the workers see a restore of the old cluster),
// change it after the backup (a new app, api scaled up), then lose every
// manager: all
// killed, their data dirs deleted, and a new cluster started on the same
// names and addresses. The workers keep running throughout. The new
// cluster does not know them and, even once its log is past anything the
// workers saw, must not stop a container. Restoring the backup into it
// brings back every app and version of the backup and nothing made
// after it; the workers, never restarted, take its lists as newer than
// the old cluster's restore, are ready again, keep the
// backup's tasks in the same processes and stop the containers of the
// change made after the backup; and the restored cluster takes writes.
func TestDisasterRecovery(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c, err := cluster.Start(cluster.Config{
		Binary:   binary,
		Managers: 3,
		Workers:  2,
		Subnet:   disasterSubnet,
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

	// The state to back up: web at v2 after v1, and api.
	web := cluster.WebApp{Name: "dr-web", Image: c.Image("v1"), Replicas: 2,
		Ingress: drIngress}
	api := cluster.WebApp{Name: "dr-api", Image: c.Image("v1"), Replicas: 1}
	deploy(t, c, web.YAML())
	deploy(t, c, api.YAML())
	waitSettled(t, c, web.Name, 1, 60*time.Second)
	web.Image = c.Image("v2")
	deploy(t, c, web.YAML())
	backupWeb := waitSettled(t, c, web.Name, 2, 90*time.Second)
	backupAPI := waitSettled(t, c, api.Name, 1, 60*time.Second)
	waitIngress(t, c, drIngress, "v2")

	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.db")
	if out, err := c.CLIAt(leader, "snapshot", "save", file); err != nil {
		t.Fatalf("snapshot save at the leader %s: %v (output %q)", leader, err, out)
	}
	backupApps := drAppsOf(t, file)
	t.Logf("backup at %s, %s after the start: apps (name|version|versions) %s",
		leader, since(t0), strings.ReplaceAll(backupApps, "\n", ", "))

	// The backup restored into the running cluster at once (nothing
	// changes): the workers see a restore of the old cluster, which the
	// disaster recovery below must still come after.
	if out, err := c.CLIAt(leader, "snapshot", "restore", file); err != nil {
		t.Fatalf("snapshot restore into the old cluster: %v (output %q)", err, out)
	}
	waitRestoredLists(t, c, 1)

	// After the backup: a new app, and api scaled up.
	late := cluster.WebApp{Name: "dr-late", Image: c.Image("v1"), Replicas: 2}
	deploy(t, c, late.YAML())
	if _, err := c.CLI("app", "scale", api.Name, "2"); err != nil {
		t.Fatalf("app scale %s 2: %v", api.Name, err)
	}
	lateSt := waitSettled(t, c, late.Name, 1, 60*time.Second)
	apiSt := waitSettled(t, c, api.Name, 1, 60*time.Second)
	afterBackup := drIDs(lateSt.Live())
	for _, task := range apiSt.Live() {
		if !slices.Contains(drIDs(backupAPI.Live()), task.ID) {
			afterBackup = append(afterBackup, task.ID)
		}
	}
	if len(afterBackup) != 3 {
		t.Fatalf("tasks made after the backup: %v, want 2 of %s and 1 of %s",
			afterBackup, late.Name, api.Name)
	}

	// What runs now, and the worker processes that run it.
	workerPIDs := map[string]int{}
	for _, w := range c.Workers() {
		if workerPIDs[w.Name], err = c.MemberPID(w.Name); err != nil {
			t.Fatal(err)
		}
	}
	pids := drTaskPIDs(t, c)
	for _, id := range append(drIDs(backupWeb.Live(), backupAPI.Live()), afterBackup...) {
		if pids[id] == 0 {
			t.Fatalf("task %s has no running process before the disaster: %v", id, pids)
		}
	}

	// No worker has seen a list past the leader's applied index.
	oldIndex, err := snapAppliedIndex(c, leader)
	if err != nil {
		t.Fatal(err)
	}

	// The disaster: every manager lost with its data; a new cluster on
	// the same names and addresses.
	tDisaster := time.Now()
	if err := c.ReplaceManagers(); err != nil {
		t.Fatal(err)
	}
	newLeader, err := c.WaitLeader(60 * time.Second)
	if err != nil {
		t.Fatalf("no leader in the new cluster: %v", err)
	}
	t.Logf("new cluster: %s leads, %s after the managers were lost", newLeader, since(tDisaster))
	wait(t, 30*time.Second, "the new cluster has join tokens of its own", func() error {
		tok, err := c.CLI("cluster", "join-token", "worker")
		switch {
		case err != nil:
			return err
		case strings.TrimSpace(string(tok)) == "":
			return fmt.Errorf("no worker join token yet")
		case strings.TrimSpace(string(tok)) == c.Token():
			return fmt.Errorf("the new cluster has the old worker token")
		}
		return nil
	})
	if err := drNoWorkers(c); err != nil {
		t.Fatalf("the new cluster: %v", err)
	}

	// Run the new cluster's log past anything the workers saw: an empty
	// list from it would now be newer than their last one.
	filler := cluster.WebApp{Name: "dr-filler", Image: c.Image("v1"), Replicas: 0}
	deploy(t, c, filler.YAML())
	writes, pushed := 0, uint64(0)
	wait(t, 60*time.Second, fmt.Sprintf("the new cluster's log past the old one's index %d", oldIndex), func() error {
		idx, err := snapAppliedIndex(c, newLeader)
		if err != nil {
			return err
		}
		if idx > oldIndex+20 { // past what was applied before the kill
			pushed = idx
			return nil
		}
		for range 20 {
			writes++
			if err := drScale(c, newLeader, filler.Name, writes%2); err != nil {
				return err
			}
		}
		return fmt.Errorf("applied index %d at %s after %d writes", idx, newLeader, writes)
	})
	t.Logf("the new cluster's log is at %d, past the old one's index %d, after %d writes",
		pushed, oldIndex, writes)

	// A stream sends a list when it opens and when the node's tasks
	// change: restart the new cluster's managers on their data dirs, so
	// that every worker opens its streams again to a cluster whose log is
	// past what it saw.
	for _, m := range c.Managers() {
		if err := c.Kill(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Managers() {
		if err := c.Restart(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	if newLeader, err = c.WaitLeader(60 * time.Second); err != nil {
		t.Fatalf("no leader after restarting the new cluster: %v", err)
	}
	for _, m := range c.Managers() {
		wait(t, 30*time.Second, m.Name+" applied the new cluster's log again", func() error {
			idx, err := snapAppliedIndex(c, m.Name)
			if err != nil {
				return err
			}
			if idx < pushed {
				return fmt.Errorf("%s has applied up to %d, not %d", m.Name, idx, pushed)
			}
			return nil
		})
	}

	// Meanwhile every container keeps running in the same process, and
	// the ingress keeps serving the last endpoint set, checked for 3s.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if err := drSamePIDs(c, pids, workerPIDs); err != nil {
			t.Fatalf("before the restore: %v", err)
		}
		for w, addr := range ingressTargets(c, drIngress) {
			body, err := cluster.Get(addr, "/")
			if v, _, _ := parseAnswer(body); err != nil || v != "v2" {
				t.Fatalf("before the restore, the ingress of %s answers %q (%v), want v2", w, body, err)
			}
		}
		time.Sleep(cluster.PollInterval)
	}

	// They were in touch with the new cluster, which refused them.
	for _, w := range c.Workers() {
		wait(t, 30*time.Second, w.Name+" refused by the new cluster", func() error {
			lines, err := c.Grep(w.Name, "does not know this node")
			if err != nil {
				return err
			}
			if len(lines) == 0 {
				return fmt.Errorf("%s has logged no refusal as an unknown node", w.Name)
			}
			return nil
		})
	}

	// The restore.
	tRestore := time.Now()
	if out, err := c.CLIAt(newLeader, "snapshot", "restore", file); err != nil {
		t.Fatalf("snapshot restore at %s: %v (output %q)", newLeader, err, out)
	}
	t.Logf("restored %s into the new cluster, %s after the managers were lost", file, since(tDisaster))

	// Every app and version of the backup, and nothing made after it.
	check := filepath.Join(dir, "restored.db")
	if out, err := c.CLIAt(newLeader, "snapshot", "save", check); err != nil {
		t.Fatalf("snapshot save after the restore: %v (output %q)", err, out)
	}
	if got := drAppsOf(t, check); got != backupApps {
		t.Errorf("apps after the restore (name|version|versions):\n%s\nwant those of the backup:\n%s",
			got, backupApps)
	}
	apps, err := c.Apps()
	if err != nil {
		t.Fatal(err)
	}
	gotApps := map[string]string{}
	for _, a := range apps {
		gotApps[a.Name] = fmt.Sprintf("v%d x%d", a.Version, a.Replicas)
	}
	if want := map[string]string{web.Name: "v2 x2", api.Name: "v1 x1"}; !maps.Equal(gotApps, want) {
		t.Errorf("app ls after the restore: %v, want %v", gotApps, want)
	}
	if tok, err := c.CLI("cluster", "join-token", "worker"); err != nil ||
		strings.TrimSpace(string(tok)) != c.Token() {
		t.Errorf("worker join token after the restore: %q (%v), want the backup's, "+
			"which the workers were started with", strings.TrimSpace(string(tok)), err)
	}

	// The workers, never restarted, take the restored lists as newer
	// than the old cluster's restore, are ready, keep the tasks of the
	// backup in the same processes and stop the containers made after
	// it.
	waitRestoredLists(t, c, 2)
	for _, w := range c.Workers() {
		if err := c.WaitNodeStatus(w.Name, "ready", 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	wait(t, 60*time.Second, "the containers made after the backup stopped", func() error {
		running, err := drTaskPIDsErr(c)
		if err != nil {
			return err
		}
		all, err := c.AllContainers()
		if err != nil {
			return err
		}
		for _, id := range afterBackup {
			for w, ids := range all {
				if running[id] != 0 || slices.Contains(ids, id) {
					return fmt.Errorf("task %s made after the backup still has a container on %s", id, w)
				}
			}
		}
		return containersMatch(c)
	})
	stWeb := waitSettled(t, c, web.Name, 2, 60*time.Second)
	stAPI := waitSettled(t, c, api.Name, 1, 60*time.Second)
	if got, want := drIDs(stWeb.Live(), stAPI.Live()), drIDs(backupWeb.Live(), backupAPI.Live()); !slices.Equal(got, want) {
		t.Errorf("tasks after the restore %v, want the backup's %v, adopted", got, want)
	}
	backupPIDs := map[string]uint32{}
	for _, id := range drIDs(backupWeb.Live(), backupAPI.Live()) {
		backupPIDs[id] = pids[id]
	}
	if err := drSamePIDs(c, backupPIDs, workerPIDs); err != nil {
		t.Errorf("after the restore: %v", err)
	}
	waitAnswers(t, c, web.Name, "v2", 30*time.Second)
	waitAnswers(t, c, api.Name, "v1", 30*time.Second)
	waitIngress(t, c, drIngress, "v2")
	t.Logf("restored cluster settled %s after the restore", since(tRestore))

	// A write after the restore is taken and carried out.
	if _, err := c.CLI("app", "scale", web.Name, "3"); err != nil {
		t.Fatalf("app scale %s 3 after the restore: %v", web.Name, err)
	}
	stWeb = waitSettled(t, c, web.Name, 2, 60*time.Second)
	if stWeb.Replicas != 3 {
		t.Errorf("app %s has %d replicas after scaling to 3", web.Name, stWeb.Replicas)
	}
	waitAnswers(t, c, web.Name, "v2", 30*time.Second)

	// The checks every fault test ends with.
	wait(t, 30*time.Second, "every worker's containerd holds exactly its live tasks", func() error {
		return containersMatch(c)
	})
	checkRunningOnce(t, c, stWeb, 3)
	stAPI = waitSettled(t, c, api.Name, 1, 30*time.Second)
	checkRunningOnce(t, c, stAPI, 1)
	if err := drSamePIDs(c, nil, workerPIDs); err != nil {
		t.Error(err)
	}
	t.Logf("disaster recovery checked in %s", since(t0))
}

// drIDs lists the IDs of tasks, sorted.
func drIDs(lists ...[]cluster.Task) []string {
	var ids []string
	for _, l := range lists {
		for _, task := range l {
			ids = append(ids, task.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// drTaskPIDsErr maps every container with a running task, on any worker,
// to its PID.
func drTaskPIDsErr(c *cluster.Cluster) (map[string]uint32, error) {
	out := map[string]uint32{}
	for _, w := range c.Workers() {
		pids, err := c.TaskPIDs(w.Name)
		if err != nil {
			return nil, err
		}
		for id, pid := range pids {
			if pid != 0 {
				out[id] = pid
			}
		}
	}
	return out, nil
}

func drTaskPIDs(t *testing.T, c *cluster.Cluster) map[string]uint32 {
	t.Helper()
	pids, err := drTaskPIDsErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// drSamePIDs is an error unless every task of pids runs with the same
// PID, and every worker of workers is the same process.
func drSamePIDs(c *cluster.Cluster, pids map[string]uint32, workers map[string]int) error {
	for w, pid := range workers {
		now, err := c.MemberPID(w)
		if err != nil {
			return err
		}
		if now != pid {
			return fmt.Errorf("worker %s was pid %d, now %d: restarted", w, pid, now)
		}
	}
	if len(pids) == 0 {
		return nil
	}
	now, err := drTaskPIDsErr(c)
	if err != nil {
		return err
	}
	for id, pid := range pids {
		if now[id] != pid {
			return fmt.Errorf("task %s ran as pid %d, now %d", id, pid, now[id])
		}
	}
	return nil
}

// drNoWorkers is an error if `node ls` lists a worker: a new cluster
// knows none.
func drNoWorkers(c *cluster.Cluster) error {
	nodes, err := c.Nodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Role == "worker" {
			return fmt.Errorf("node ls lists worker %s (%s)", n.Name, n.Status)
		}
	}
	return nil
}

var drHTTP = &http.Client{Timeout: 10 * time.Second}

// drScale sets the replicas of app through manager's REST API, as a
// script would; it is quicker than the CLI for many writes.
func drScale(c *cluster.Cluster, manager, app string, replicas int) error {
	m, err := c.Member(manager)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]int{"replicas": replicas})
	resp, err := drHTTP.Post(m.Addr()+"/v1/apps/"+app+"/scale", "application/json",
		bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scale %s to %d at %s: %s", app, replicas, manager, resp.Status)
	}
	return nil
}

// waitRestoredLists waits until every worker has logged n times that
// it took the lists of a restored state.
func waitRestoredLists(t *testing.T, c *cluster.Cluster, n int) {
	t.Helper()
	for _, w := range c.Workers() {
		wait(t, 30*time.Second, fmt.Sprintf("%s took restored lists %d times", w.Name, n), func() error {
			lines, err := c.Grep(w.Name, "assignments of a restored state received")
			if err != nil {
				return err
			}
			if len(lines) < n {
				return fmt.Errorf("%s logged %d restored states, not %d", w.Name, len(lines), n)
			}
			return nil
		})
	}
}

// drAppsOf lists the apps of a snapshot file as name|version|number of
// versions lines, with sqlite3, as an operator would look.
func drAppsOf(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("sqlite3", file,
		"select name || '|' || version || '|' || json_array_length(json, '$.versions') "+
			"from apps order by name").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s: %v: %s", file, err, out)
	}
	return strings.TrimSpace(string(out))
}
