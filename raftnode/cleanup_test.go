package raftnode

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

func TestPlanCleanup(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	five := []string{"n1", "n2", "n3", "n4", "n5"}
	tests := []struct {
		name   string
		voters []string
		alive  []string
		dead   []DeadPeer
		after  time.Duration
		floor  int
		remove []string
		held   []string
	}{
		{name: "floor keeps the third of three", voters: five[:3],
			dead: []DeadPeer{{"n3", ago(time.Hour)}}, after: time.Minute, floor: 3,
			held: []string{"n3"}},
		{name: "expect 0 removes down to a majority", voters: five[:3],
			dead: []DeadPeer{{"n3", ago(time.Hour)}}, after: time.Minute, floor: 1,
			remove: []string{"n3"}},
		{name: "not before the delay", voters: five,
			dead: []DeadPeer{{"n5", ago(59 * time.Second)}}, after: time.Minute, floor: 3},
		{name: "at the delay", voters: five,
			dead: []DeadPeer{{"n5", ago(time.Minute)}}, after: time.Minute, floor: 3,
			remove: []string{"n5"}},
		{name: "oldest first, down to the floor", voters: five,
			dead:  []DeadPeer{{"n4", ago(2 * time.Hour)}, {"n5", ago(3 * time.Hour)}},
			after: time.Minute, floor: 4,
			remove: []string{"n5"}, held: []string{"n4"}},
		{name: "two of five down to three", voters: five,
			dead:  []DeadPeer{{"n4", ago(2 * time.Hour)}, {"n5", ago(3 * time.Hour)}},
			after: time.Minute, floor: 3,
			remove: []string{"n5", "n4"}},
		{name: "a dead majority removes nobody", voters: five,
			dead: []DeadPeer{{"n2", ago(time.Hour)}, {"n3", ago(time.Hour)},
				{"n4", ago(time.Hour)}},
			after: time.Minute, floor: 1,
			held: []string{"n2", "n3", "n4"}},
		{name: "recently dead voters count as failed", voters: five[:4],
			dead:  []DeadPeer{{"n3", ago(time.Hour)}, {"n4", ago(time.Second)}},
			after: time.Minute, floor: 1,
			held: []string{"n3"}},
		{name: "alive again is kept", voters: five, alive: []string{"n5"},
			dead: []DeadPeer{{"n5", ago(time.Hour)}}, after: time.Minute, floor: 3},
		{name: "never self", voters: five,
			dead: []DeadPeer{{"n1", ago(time.Hour)}}, after: time.Minute, floor: 1},
		{name: "not a voter", voters: five,
			dead: []DeadPeer{{"n9", ago(time.Hour)}}, after: time.Minute, floor: 1},
		{name: "disabled", voters: five,
			dead: []DeadPeer{{"n5", ago(time.Hour)}}, after: 0, floor: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			alive := make(map[string]bool)
			for _, a := range tc.alive {
				alive[a] = true
			}
			plan := planCleanup(cleanupInput{
				voters: tc.voters, self: "n1", alive: alive, dead: tc.dead,
				now: now, after: tc.after, floor: tc.floor,
			})
			var removed []string
			for _, d := range plan.remove {
				removed = append(removed, d.Name)
			}
			var held []string
			for _, h := range plan.held {
				held = append(held, h.name)
			}
			if !slices.Equal(removed, tc.remove) || !slices.Equal(held, tc.held) {
				t.Fatalf("remove %v held %v, want remove %v held %v",
					removed, held, tc.remove, tc.held)
			}
		})
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
	base := leader.reconciles.Load()
	testutil.WaitFor(t, 5*time.Second, func() error {
		// Two passes: the one running at kill may have read the old view.
		if got := leader.reconciles.Load(); got < base+2 {
			return fmt.Errorf("leader made %d reconcile passes since the kill, want 2",
				got-base)
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
