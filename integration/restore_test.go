package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// restoreSubnet is the loopback subnet of TestRestore's cluster.
const restoreSubnet = 14

// Issue 4, operations 3: `snapshot restore` into a running cluster. Save
// with app A deployed, then deploy B and remove A, and restore the file
// through a follower: the cluster has A and not B again, A's tasks run in
// the workers' containerds and B's containers are gone.
func TestRestore(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:   binary,
		Managers: 3,
		Workers:  2,
		Subnet:   restoreSubnet,
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

	a := cluster.WebApp{Name: "restore-a", Image: c.Image("v1"), Replicas: 2}
	b := cluster.WebApp{Name: "restore-b", Image: c.Image("v2"), Replicas: 2}
	deploy(t, c, a.YAML())
	stA := waitSettled(t, c, a.Name, 1, 60*time.Second)

	dir := t.TempDir()
	file := filepath.Join(dir, "state.db")
	if out, err := c.CLI("snapshot", "save", file); err != nil {
		t.Fatalf("snapshot save: %v (output %q)", err, out)
	}

	deploy(t, c, b.YAML())
	stB := waitSettled(t, c, b.Name, 1, 60*time.Second)
	if _, err := c.CLI("app", "rm", a.Name); err != nil {
		t.Fatalf("app rm %s: %v", a.Name, err)
	}
	wait(t, 60*time.Second, "app "+a.Name+" removed and no container left", func() error {
		if _, err := c.AppStatus(a.Name); err == nil {
			return fmt.Errorf("app %s still listed", a.Name)
		}
		return containersMatch(c)
	})

	t.Run("refuses-non-snapshot", func(t *testing.T) {
		junk := filepath.Join(dir, "junk.db")
		if err := os.WriteFile(junk, []byte("not a database"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.CLI("snapshot", "restore", junk)
		var cliErr *cluster.CLIError
		if !errors.As(err, &cliErr) || !strings.Contains(err.Error(), "not a hivemind snapshot") {
			t.Fatalf("snapshot restore of a non-snapshot: err %v (output %q), "+
				"want a refusal naming \"not a hivemind snapshot\"", err, out)
		}
		if _, err := c.AppStatus(b.Name); err != nil {
			t.Fatalf("app %s gone after a refused restore: %v", b.Name, err)
		}
	})

	// Through a follower, which passes the upload on to the leader.
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, m := range c.Managers() {
		if m.Name != leader {
			follower = m.Name
			break
		}
	}
	if out, err := c.CLIAt(follower, "snapshot", "restore", file); err != nil {
		t.Fatalf("snapshot restore at follower %s: %v (output %q)", follower, err, out)
	}

	apps, err := c.Apps()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range apps {
		names[s.Name] = true
	}
	if !names[a.Name] || names[b.Name] {
		t.Fatalf("app ls after restore: %v, want %s and not %s", names, a.Name, b.Name)
	}

	// The restored tasks of A lost their containers when A was removed:
	// the workers report them failed and the leader replaces them.
	wait(t, 90*time.Second, "app "+a.Name+" runs replacements of its restored tasks", func() error {
		st, err := c.AppStatus(a.Name)
		if err != nil {
			return err
		}
		if err := st.Settled(1); err != nil {
			return err
		}
		for _, old := range stA.Live() {
			for _, task := range st.Live() {
				if task.ID == old.ID {
					return fmt.Errorf("restored task %s (container removed with the app) still shown %s",
						task.ID, task.State)
				}
			}
		}
		return nil
	})
	waitAnswers(t, c, a.Name, "v1", 30*time.Second)
	wait(t, 60*time.Second, "workers' containers are exactly the restored state's live tasks", func() error {
		if err := containersMatch(c); err != nil {
			return err
		}
		all, err := c.AllContainers()
		if err != nil {
			return err
		}
		for _, task := range stB.Live() {
			for node, ids := range all {
				if contains(ids, task.ID) {
					return fmt.Errorf("task %s of removed-by-restore app %s still has a container on %s",
						task.ID, b.Name, node)
				}
			}
		}
		return nil
	})
	for _, m := range c.Managers() {
		var apps []cluster.AppSummary
		if err := c.JSONAt(m.Name, &apps, "app", "ls"); err != nil {
			t.Fatalf("app ls at %s: %v", m.Name, err)
		}
		if len(apps) != 1 || apps[0].Name != a.Name {
			t.Errorf("app ls through %s after restore: %+v, want only %s", m.Name, apps, a.Name)
		}
	}
	removeApp(t, c, a.Name)
}

// containersMatch is an error unless every worker's containerd holds
// exactly the containers of the live tasks assigned to it.
func containersMatch(c *cluster.Cluster) error {
	for _, w := range c.Workers() {
		if err := sameContainers(c, w.Name); err != nil {
			return err
		}
	}
	return nil
}
