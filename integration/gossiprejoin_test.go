package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// The loopback subnet (127.0.41.x), iptables chain and group IDs of
// TestManagerGossipRejoin's cluster.
const (
	gossipRejoinSubnet  = 41
	gossipRejoinChain   = "HM-TEST-41"
	gossipRejoinGIDBase = 44100 // + i for mi
)

// gossipForgetTime is how long the test keeps a manager cut off: longer
// than memberlist keeps gossiping to a node it declared dead (its LAN
// GossipToTheDeadTime, 30s), after which neither side ever contacts the
// other again by itself.
const gossipForgetTime = 35 * time.Second

// A manager cut off from the other managers for longer than memberlist
// gossips to the dead comes back once the partition heals: without the
// managers' gossip Rejoin, the pools never merged again, the cut-off
// manager kept failing pre-vote campaigns, and the leader, whose
// dead-manager cleanup had removed it meanwhile, never added it back.
// Four managers (--bootstrap-expect 3, so one may be removed) with a
// dead-manager cleanup of 3s; a follower is cut off from the three others
// for 35s, is removed from the voters, and after healing is a voter
// again that follows the leader.
func TestManagerGossipRejoin(t *testing.T) {
	t.Parallel()
	fw, removeFirewall := newFirewall(t, gossipRejoinChain)

	gids := cluster.MemberGIDs(4, 0, gossipRejoinGIDBase)
	bin, err := cluster.GroupWrapper(t.TempDir(), binary, gids)
	if err != nil {
		t.Fatal(err)
	}
	const cleanup = 3 * time.Second
	c, err := cluster.Start(cluster.Config{
		Binary:      bin,
		Managers:    3,
		Subnet:      gossipRejoinSubnet,
		Log:         harnessLog,
		ManagerArgs: []string{"--dead-manager-cleanup", cleanup.String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeFirewall() // heal first, so that the managers stop normally
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	onFailure(t, c)
	if _, err := c.AddManager(); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"m1", "m2", "m3", "m4"}
	waitVoters(t, c, leader, all, 30*time.Second)

	// Cut off a follower from every other manager: the gossip it sends
	// from its bound socket, and the connections both sides dial.
	victim := "m4"
	if leader == victim {
		victim = "m3"
	}
	if err := c.CutOffManager(fw, victim, gids); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()

	others := slices.DeleteFunc(slices.Clone(all), func(s string) bool { return s == victim })
	waitVoters(t, c, leader, others, cleanup+30*time.Second)
	t.Logf("%s removed from the voters %s after the cut", victim, since(cut))

	// The partition lasts the scenario's length, and the victim stays
	// out of the voters throughout: checked on every poll.
	wait(t, gossipForgetTime+30*time.Second, "the cut held for "+gossipForgetTime.String(), func() error {
		if err := votersAre(c, leader, others); err != nil {
			t.Fatalf("during the cut, %s after it: %v", since(cut), err)
		}
		if held := time.Since(cut); held < gossipForgetTime {
			return fmt.Errorf("cut for %s", held.Round(time.Second))
		}
		return nil
	})
	if err := fw.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	t.Logf("healed %s after the cut", since(cut))

	waitVoters(t, c, leader, all, 30*time.Second)
	t.Logf("%s a voter again %s after healing", victim, since(healed))
	wait(t, 30*time.Second, victim+" follows "+leader, func() error {
		peers, err := c.Peers(victim)
		if err != nil {
			return err
		}
		lp, vp := peers[leader], peers[victim]
		if vp.State != "follower" || !lp.Leader {
			return fmt.Errorf("through %s: %s is %q, %s leader=%t",
				victim, victim, vp.State, leader, lp.Leader)
		}
		return nil
	})
	t.Logf("%s follows %s %s after healing", victim, leader, since(healed))
	if lines, err := c.Grep(victim, "joining them again"); err != nil || len(lines) == 0 {
		t.Errorf("%s's log has no gossip rejoin line (%v)", victim, err)
	}
}
