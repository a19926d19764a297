package raftnode

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

func TestCleanupStatus(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	base := cleanupInput{self: "n1", alive: map[string]bool{"n2": true},
		dead: map[string]time.Time{"n2": ago(time.Hour), "n3": ago(time.Hour),
			"n4": ago(59 * time.Second), "n1": ago(time.Hour)},
		reached: map[string]time.Time{"n5": ago(time.Second)},
		now:     now, after: time.Minute}
	base.dead["n5"] = ago(time.Hour)
	tests := []struct {
		name string
		in   cleanupInput
		want autopilot.NodeStatus
	}{
		{"n1", base, autopilot.NodeAlive},  // self
		{"n2", base, autopilot.NodeAlive},  // alive again in gossip
		{"n3", base, autopilot.NodeFailed}, // dead for an hour
		{"n4", base, autopilot.NodeAlive},  // not before the delay
		{"n5", base, autopilot.NodeAlive},  // answered a second ago
		{"n6", base, autopilot.NodeAlive},  // never seen dead
		{"n3", func() cleanupInput { in := base; in.after = 0; return in }(),
			autopilot.NodeAlive}, // cleanup disabled
	}
	for _, tc := range tests {
		if got := tc.in.statusOf(tc.name); got != tc.want {
			t.Errorf("%s with cleanup after %s: %s, want %s", tc.name, tc.in.after, got, tc.want)
		}
	}
}

func TestCleanupKeepsWhenMostLookDead(t *testing.T) {
	dead := func(names ...string) map[string]time.Time {
		m := make(map[string]time.Time)
		for _, n := range names {
			m[n] = time.Now()
		}
		return m
	}
	five := []string{"n1", "n2", "n3", "n4", "n5"}
	tests := []struct {
		voters []string
		dead   map[string]time.Time
		keep   bool
	}{
		{five, dead("n4", "n5"), false},
		{five, dead("n3", "n4", "n5"), true},
		{five[:3], dead("n3"), false},
		{five[:3], dead("n2", "n3"), true},
		{five[:4], dead("n3", "n4"), true},  // 2 of 3 others
		{five[:3], dead("n1", "n3"), false}, // self does not count
	}
	for _, tc := range tests {
		in := cleanupInput{voters: tc.voters, self: "n1", dead: tc.dead,
			alive: map[string]bool{}}
		if got := in.keep() != ""; got != tc.keep {
			t.Errorf("voters %v, dead %v: keep %v, want %v", tc.voters,
				slices.Sorted(maps.Keys(tc.dead)), got, tc.keep)
		}
	}
}

// startCleanupCluster starts voters nodes n1..nN of which the first
// expect bootstrap with BootstrapExpect expect and the others join,
// every one with DeadServerCleanup cleanup, and waits until all are
// voters.
func startCleanupCluster(t *testing.T, voters, expect int,
	cleanup time.Duration) *cluster {
	c := newCluster(t)
	c.cleanup = cleanup
	var names []string
	for i := 1; i <= voters; i++ {
		name := fmt.Sprintf("n%d", i)
		names = append(names, name)
		c.start(name, expect)
		if i == expect {
			c.waitLeader(nil)
		}
	}
	c.waitServers(names...)
	return c
}

// follower returns a running node that is not the leader.
func (c *cluster) follower(leader string) string {
	for _, name := range sorted(keys(c.nodes)) {
		if name != leader {
			return name
		}
	}
	c.t.Fatal("no follower")
	return ""
}

func keys(m map[string]*Node) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// isVoter reports whether the leader's configuration has name as voter.
func isVoter(t *testing.T, leader *Node, name string) bool {
	t.Helper()
	servers, err := leader.Servers()
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	for _, s := range servers {
		if s.Name == name && s.Voter {
			return true
		}
	}
	return false
}

func TestDeadServerCleanupKeepsBootstrapExpect(t *testing.T) {
	c := startCleanupCluster(t, 3, 3, 50*time.Millisecond)
	leaderName := c.waitLeader(nil)
	leader := c.nodes[leaderName]
	dead := c.follower(leaderName)

	c.stop(dead)
	// Dead for an hour already: only the floor can keep it.
	c.disc.kill(dead, time.Now().Add(-time.Hour))
	// Past the time a manager that answered stats counts as alive.
	// Two more passes: the one running then may have read the old view.
	want := leader.cleanupPasses.Load() + uint64(reachedRecently/autopilotInterval) + 2
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := leader.cleanupPasses.Load(); got < want {
			return fmt.Errorf("leader at cleanup pass %d, want %d", got, want)
		}
		return nil
	})
	if !isVoter(t, leader, dead) {
		t.Fatalf("%s removed: 3 voters with bootstrap-expect 3 must stay 3", dead)
	}
}

func TestDeadServerCleanupRemovesAndReadds(t *testing.T) {
	const cleanup = time.Second
	c := startCleanupCluster(t, 5, 3, cleanup)
	leaderName := c.waitLeader(nil)
	leader := c.nodes[leaderName]
	dead := "n5"
	if dead == leaderName {
		dead = "n4"
	}

	c.stop(dead)
	since, ok := c.disc.deadSince(dead)
	if !ok {
		t.Fatalf("%s not dead in discovery after stop", dead)
	}
	// Not before the delay: poll the leader's configuration until just
	// before since+cleanup.
	for time.Until(since.Add(cleanup)) > 50*time.Millisecond {
		if !isVoter(t, leader, dead) {
			t.Fatalf("%s removed after %s, before the %s delay",
				dead, time.Since(since), cleanup)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var rest []string
	for name := range c.nodes {
		rest = append(rest, name)
	}
	c.waitServers(rest...)
	if took := time.Since(since); took < cleanup {
		t.Fatalf("%s removed after %s, want at least %s", dead, took, cleanup)
	}

	// Back with an empty data dir: added again as a new voter, and it
	// catches up.
	if _, err := leader.Apply(t.Context(), []byte("while away")); err != nil {
		t.Fatalf("apply: %v", err)
	}
	c.start(dead, 3)
	c.waitServers(append(rest, dead)...)
	c.waitApplied("while away")
}

// A manager dead in the leader's gossip but answering its stats
// requests stays a voter.
func TestDeadServerCleanupKeepsAnsweringManager(t *testing.T) {
	c := startCleanupCluster(t, 5, 3, 50*time.Millisecond)
	leaderName := c.waitLeader(nil)
	leader := c.nodes[leaderName]
	hidden := c.follower(leaderName)

	c.disc.hide(hidden, time.Now().Add(-time.Hour))
	want := leader.cleanupPasses.Load() + uint64(reachedRecently/autopilotInterval) + 2
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := leader.cleanupPasses.Load(); got < want {
			return fmt.Errorf("leader at cleanup pass %d, want %d", got, want)
		}
		return nil
	})
	if !isVoter(t, leader, hidden) {
		t.Fatalf("%s removed while it answered stats requests", hidden)
	}
}

// A manager that gossip shows alive but that does not answer (killed a
// moment ago, or another cluster's) is not added as a voter: a dead
// voter counts towards the quorum. Once it answers, it is added.
func TestReconcileAddsOnlyAnsweringManagers(t *testing.T) {
	c := startCleanupCluster(t, 3, 3, 0)
	leader := c.nodes[c.waitLeader(nil)]

	ghost := Peer{Name: "ghost", RaftAddr: "127.0.0.1:1"}
	c.disc.add(ghost, nil) // alive in gossip, no node answers for it
	want := leader.reconciles.Load() + 3
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := leader.reconciles.Load(); got < want {
			return fmt.Errorf("leader at reconcile pass %d, want %d", got, want)
		}
		return nil
	})
	if isVoter(t, leader, ghost.Name) {
		t.Fatal("a manager that does not answer was added as a voter")
	}

	c.start("n4", 3)
	c.waitServers("n1", "n2", "n3", "n4")
}
