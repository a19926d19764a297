package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// cleanupSubnet is the loopback subnet of TestDeadManagerCleanup.
const cleanupSubnet = 24

// Issue 4, operations: a manager gone for good leaves the voter set by
// itself after --dead-manager-cleanup, never below --bootstrap-expect
// voters, and one that comes back with an empty data dir rejoins as a
// new voter. Three managers bootstrap with --bootstrap-expect 3 and two
// more join with --join alone (bootstrap-expect 0), and one of those two
// is made leader: the floor is the cluster's, not the leader's flag.
// Three followers are then killed one after the other: the first two
// are removed, the third is kept (3 voters is the floor) and the leader
// says why. The first one then comes back with an empty data dir and is
// a voter again.
func TestDeadManagerCleanup(t *testing.T) {
	t.Parallel()
	const after = 3 * time.Second
	c := startOwnCluster(t, 3, 0, cleanupSubnet,
		"--dead-manager-cleanup", after.String())
	for range 2 {
		if _, err := c.AddManager("--bootstrap-expect", "0"); err != nil {
			t.Fatal(err)
		}
	}
	first, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"m1", "m2", "m3", "m4", "m5"}
	waitVoters(t, c, first, all, 30*time.Second)
	const leader = "m4"
	if err := c.MoveLeadership(leader, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// Followers, last name first.
	var victims []string
	for i := len(all) - 1; i >= 0 && len(victims) < 3; i-- {
		if all[i] != leader {
			victims = append(victims, all[i])
		}
	}
	voters := slices.Clone(all)
	for _, v := range victims[:2] {
		if err := c.Kill(v); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		voters = slices.DeleteFunc(voters, func(s string) bool { return s == v })
		waitVoters(t, c, leader, voters, after+30*time.Second)
		t.Logf("%s removed from the voters %s after its kill", v, since(killed))
		if lines, err := c.Grep(leader, "removing dead server"); err != nil ||
			!anyContains(lines, "server="+v) {
			t.Errorf("%s's log has no `removing dead server` line for %s (%v): %q",
				leader, v, err, lines)
		}
	}

	// The third would leave 2 voters, below --bootstrap-expect 3.
	kept := victims[2]
	if err := c.Kill(kept); err != nil {
		t.Fatal(err)
	}
	wait(t, after+30*time.Second, leader+" says why it keeps "+kept, func() error {
		lines, err := c.Grep(leader, "dead server kept as voter")
		if err != nil {
			return err
		}
		for _, l := range lines {
			if strings.Contains(l, "server="+kept) && strings.Contains(l, "bootstrap-expect") {
				return nil
			}
		}
		return fmt.Errorf("no `dead server kept as voter` line for %s naming bootstrap-expect: %q",
			kept, lines)
	})
	assertVoters(t, c, leader, voters)

	// Back with an empty data dir: a voter again, under the same name.
	back := victims[0]
	if err := c.Wipe(back); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(back); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, leader, append(voters, back), 60*time.Second)
	wait(t, 30*time.Second, back+" follows "+leader, func() error {
		peers, err := c.Peers(back)
		if err != nil {
			return err
		}
		if p := peers[back]; p.State != "follower" || p.AppliedIndex == 0 {
			return fmt.Errorf("%s is %q at applied index %d", back, p.State, p.AppliedIndex)
		}
		return nil
	})
}

// waitVoters waits until `raft peers` through leader lists exactly want
// as voters.
func waitVoters(t *testing.T, c *cluster.Cluster, leader string, want []string,
	timeout time.Duration) {
	t.Helper()
	wait(t, timeout, fmt.Sprintf("voters %v in raft peers", want), func() error {
		return votersAre(c, leader, want)
	})
}

func assertVoters(t *testing.T, c *cluster.Cluster, leader string, want []string) {
	t.Helper()
	if err := votersAre(c, leader, want); err != nil {
		t.Fatal(err)
	}
}

func votersAre(c *cluster.Cluster, leader string, want []string) error {
	peers, err := c.Peers(leader)
	if err != nil {
		return err
	}
	var got []string
	for name, p := range peers {
		if p.Voter {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(got, w) {
		return fmt.Errorf("raft peers through %s lists voters %v, want %v", leader, got, w)
	}
	return nil
}

func anyContains(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}
