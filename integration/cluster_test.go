package integration

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// Points 1 and 2: three managers started at once elect one leader, every
// manager agrees on it, and `cluster status` shows each with its state.
func TestClusterStatus(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Managers() {
		var st cluster.ClusterStatus
		if err := c.JSONAt(m.Name, &st, "cluster", "status"); err != nil {
			t.Fatal(err)
		}
		if st.Leader != leader {
			t.Errorf("%s says the leader is %q, %s says %q", m.Name, st.Leader, c.Managers()[0].Name, leader)
		}
		if len(st.Managers) != 3 {
			t.Fatalf("%s lists %d managers, want 3: %+v", m.Name, len(st.Managers), st.Managers)
		}
		leaders := 0
		for _, ms := range st.Managers {
			if !ms.Voter {
				t.Errorf("%s: manager %s is not a voter", m.Name, ms.Name)
			}
			if ms.Address == "" {
				t.Errorf("%s: manager %s has no address", m.Name, ms.Name)
			}
			switch {
			case ms.State == "leader":
				leaders++
				if ms.Name != leader {
					t.Errorf("%s: %s has state leader, but the leader is %s", m.Name, ms.Name, leader)
				}
			case ms.State != "follower":
				t.Errorf("%s: manager %s has state %q, want follower", m.Name, ms.Name, ms.State)
			}
		}
		if leaders != 1 {
			t.Errorf("%s: %d managers with state leader, want 1", m.Name, leaders)
		}
	}
}

// Point 2: `cluster join-token worker` prints the token and nothing else.
func TestJoinTokenPrintsOnlyToken(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	for _, m := range c.Managers() {
		out, err := c.CLIAt(m.Name, "cluster", "join-token", "worker")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(out); got != c.Token()+"\n" && got != c.Token() {
			t.Errorf("join-token at %s printed %q, want only the token %q", m.Name, got, c.Token())
		}
		if strings.ContainsAny(c.Token(), " \t\n") || len(c.Token()) < 16 {
			t.Errorf("token %q: want one word of at least 16 characters", c.Token())
		}
	}
}

// Point 3: joined workers show as ready in `node ls`, with their address,
// and so do the managers.
func TestNodeList(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cluster.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, m := range append(c.Managers(), c.Workers()...) {
		if !c.Running(m.Name) {
			continue // the refused worker of TestWorkerWrongToken
		}
		n, ok := byName[m.Name]
		if !ok {
			t.Errorf("%s %s missing from node ls: %+v", m.Role, m.Name, nodes)
			continue
		}
		want := cluster.Node{Name: m.Name, Role: m.Role, Address: m.IP, Status: "ready"}
		if n != want {
			t.Errorf("node ls: %+v, want %+v", n, want)
		}
	}
}

// Point 3: a worker with a wrong token is refused; it says so and exits
// non-zero, and it never shows in `node ls`.
func TestWorkerWrongToken(t *testing.T) {
	c := sharedCluster(t)
	onFailure(t, c)

	w, err := c.AddWorker("not-the-token")
	if err != nil {
		t.Fatal(err)
	}
	exited, err := c.ExitErr(w.Name, 30*time.Second)
	if !exited {
		t.Fatalf("worker %s with a wrong token still runs after 30s:\n%s", w.Name, cluster.Tail(w.LogPath, 20))
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Errorf("worker %s with a wrong token exited with %v, want a non-zero status", w.Name, err)
	}
	t.Logf("worker %s exited (%v); its log ends: %s", w.Name, err, cluster.Tail(w.LogPath, 1))
	log := strings.ToLower(cluster.Tail(w.LogPath, 20))
	if !strings.Contains(log, "token") {
		t.Errorf("worker %s does not say its token was refused; its log ends:\n%s", w.Name, log)
	}
	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == w.Name {
			t.Errorf("worker %s with a wrong token is listed: %+v", w.Name, n)
		}
	}
}

// Point 1: five managers, started last to first a second apart, form one
// cluster the same way, and a whole cluster killed and restarted on its
// data dirs keeps its state.
func TestFiveManagersRestartKeepState(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:       binary,
		Managers:     5,
		Subnet:       fiveSubnet,
		ReverseStart: true,
		ManagerGap:   time.Second,
		Log:          harnessLog,
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

	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Managers) != 5 {
		t.Fatalf("cluster status lists %d managers, want 5: %+v", len(st.Managers), st.Managers)
	}

	// Two versions of an app; with no worker nothing runs, but the state
	// is there to survive.
	app := cluster.WebApp{Name: "persist", Image: "127.0.0.1:1/web:v1", Replicas: 2}
	deploy(t, c, app.YAML())
	app.Image = "127.0.0.1:1/web:v2"
	deploy(t, c, app.YAML())
	wantVersion := func() error {
		st, err := c.AppStatus("persist")
		if err != nil {
			return err
		}
		if st.Version != 2 {
			return fmt.Errorf("app persist at version %d, want 2", st.Version)
		}
		return nil
	}
	wait(t, 10*time.Second, "app persist at version 2", wantVersion)

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
	if _, err := c.WaitLeader(60 * time.Second); err != nil {
		t.Fatalf("no leader after restarting all five managers: %v", err)
	}
	wait(t, 20*time.Second, "app persist at version 2 after a full restart", wantVersion)
	for _, m := range c.Managers() {
		wait(t, 20*time.Second, m.Name+" sees app persist at version 2", func() error {
			var st cluster.AppStatus
			if err := c.JSONAt(m.Name, &st, "app", "status", "persist"); err != nil {
				return err
			}
			if st.Version != 2 {
				return fmt.Errorf("%s: app persist at version %d, want 2", m.Name, st.Version)
			}
			return nil
		})
	}
}
