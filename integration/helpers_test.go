package integration

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// onFailure logs the tail of every log of c when t has failed.
func onFailure(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", c.Dir, c.Tails(40))
		}
	})
}

// wait polls cond until it holds and fails t with what was not yet true.
func wait(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := cluster.WaitFor(timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// newFirewall makes the test's own iptables chains, removed when the
// test ends; removeFirewall removes them (and heals every cut) sooner, and
// may be called again.
func newFirewall(t *testing.T, chain string) (fw *cluster.Firewall, removeFirewall func()) {
	t.Helper()
	fw, err := cluster.NewFirewall(chain)
	if err != nil {
		t.Fatal(err)
	}
	removeFirewall = func() {
		if err := fw.Remove(); err != nil {
			t.Errorf("remove firewall chains: %v", err)
		}
	}
	t.Cleanup(removeFirewall)
	return fw, removeFirewall
}

// deploy runs `app deploy` with spec and fails t if it is refused.
func deploy(t *testing.T, c *cluster.Cluster, spec string) {
	t.Helper()
	if out, err := c.Deploy(spec); err != nil {
		t.Fatalf("app deploy: %v (output %q)\nspec:\n%s", err, out, spec)
	}
}

// deployApp deploys a and removes it when the test ends.
func deployApp(t *testing.T, c *cluster.Cluster, a cluster.WebApp) {
	t.Helper()
	deploy(t, c, a.YAML())
	t.Cleanup(func() { removeApp(t, c, a.Name) })
}

// removeApp removes an app if it still exists (best effort, for cleanups).
func removeApp(t *testing.T, c *cluster.Cluster, name string) {
	if _, err := c.AppStatus(name); err != nil {
		return
	}
	if _, err := c.CLI("app", "rm", name); err != nil {
		t.Logf("cleanup: app rm %s: %v", name, err)
	}
}

// waitSettled waits until app runs only healthy tasks of version, as many
// as its replicas, with no deployment running, and returns its status.
func waitSettled(t *testing.T, c *cluster.Cluster, app string, version int64, timeout time.Duration) *cluster.AppStatus {
	t.Helper()
	var st *cluster.AppStatus
	wait(t, timeout, fmt.Sprintf("app %s settled on version %d", app, version), func() error {
		s, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		st = s
		return s.Settled(version)
	})
	return st
}

// waitAnswers waits until every live task of app answers with image's
// VERSION and its own task ID.
func waitAnswers(t *testing.T, c *cluster.Cluster, app, image string, timeout time.Duration) {
	t.Helper()
	wait(t, timeout, fmt.Sprintf("every task of %s answers VERSION=%s", app, image), func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		return cluster.CheckAnswers(st, image)
	})
}

// waitDeployment waits until the latest deployment of app has left
// "running" and returns it.
func waitDeployment(t *testing.T, c *cluster.Cluster, app string, timeout time.Duration) *cluster.Deployment {
	t.Helper()
	var d *cluster.Deployment
	wait(t, timeout, fmt.Sprintf("deployment of %s finished", app), func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		if st.Deployment == nil {
			return fmt.Errorf("app %s has no deployment", app)
		}
		if st.Deployment.Status == "running" {
			return fmt.Errorf("deployment %s of %s still running (%s)",
				st.Deployment.ID, app, st.Deployment.Description)
		}
		d = st.Deployment
		return nil
	})
	return d
}

// liveTasksOn lists, over every app, the IDs of the tasks assigned to node
// that are not stopped or failed, sorted.
func liveTasksOn(c *cluster.Cluster, node string) ([]string, error) {
	apps, err := c.Apps()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, a := range apps {
		st, err := c.AppStatus(a.Name)
		var cliErr *cluster.CLIError
		if errors.As(err, &cliErr) {
			continue // removed since app ls
		}
		if err != nil {
			return nil, err
		}
		for _, task := range st.Live() {
			if task.Node == node {
				ids = append(ids, task.ID)
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// sameContainers is an error unless node's containerd holds exactly the
// containers of the live tasks assigned to node.
func sameContainers(c *cluster.Cluster, node string) error {
	want, err := liveTasksOn(c, node)
	if err != nil {
		return err
	}
	got, err := c.Containers(node)
	if err != nil {
		return err
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return fmt.Errorf("%s: containers %v, assigned live tasks %v", node, got, want)
	}
	return nil
}

// tasksOf returns the live tasks of st of version.
func tasksOf(st *cluster.AppStatus, version int64) []cluster.Task {
	var out []cluster.Task
	for _, task := range st.Live() {
		if int64(task.Version) == version {
			out = append(out, task)
		}
	}
	return out
}
