package raftnode

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestReplicates(t *testing.T) {
	c := MakeCluster(t, 3)
	c.waitServers("n1", "n2", "n3")
	leader := c.nodes[c.waitLeader(nil)]

	idx, err := leader.Apply(t.Context(), []byte("one"))
	if err != nil {
		t.Fatalf("apply on leader: %v", err)
	}
	if idx == 0 {
		t.Error("apply returned index 0")
	}
	c.waitApplied("one")

	st := leader.Stats()
	if st.State != "leader" || !st.Voter || st.Term == 0 ||
		st.AppliedIndex < idx || st.LastContact != 0 {
		t.Errorf("leader stats %v", st)
	}
}

func TestFailoverKeepsCommitted(t *testing.T) {
	c := MakeCluster(t, 3)
	old := c.waitLeader(nil)

	for i := range 5 {
		entry := fmt.Sprintf("e%d", i)
		if _, err := c.nodes[old].Apply(t.Context(), []byte(entry)); err != nil {
			t.Fatalf("apply %s: %v", entry, err)
		}
	}

	c.stop(old)
	leader := c.waitLeader(map[string]bool{old: true})
	if _, err := c.nodes[leader].Apply(t.Context(), []byte("after")); err != nil {
		t.Fatalf("apply on new leader %s: %v", leader, err)
	}
	for i := range 5 {
		c.waitApplied(fmt.Sprintf("e%d", i))
	}
	c.waitApplied("after")
}

func TestApplyOnFollower(t *testing.T) {
	c := MakeCluster(t, 3)
	leader := c.waitLeader(nil)
	for name, n := range c.nodes {
		if name == leader {
			continue
		}
		_, err := n.Apply(t.Context(), []byte("x"))
		if !errors.Is(err, raft.ErrNotLeader) {
			t.Errorf("apply on follower %s: %v, want raft.ErrNotLeader",
				name, err)
		}
		if st := n.Stats(); st.State != "follower" || st.LastContact < 0 {
			t.Errorf("follower %s stats %v", name, st)
		}
	}
}

func TestApplyReturnsFSMError(t *testing.T) {
	c := MakeCluster(t, 1)
	n := c.nodes["n1"]

	idx, err := n.Apply(t.Context(), []byte("bad entry"))
	if !errors.Is(err, errRejected) {
		t.Fatalf("apply: %v, want the FSM's error", err)
	}
	if idx == 0 {
		t.Error("rejected entry has no index")
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := n.Apply(ctx, []byte("late")); !errors.Is(err, context.Canceled) {
		t.Errorf("apply with cancelled ctx: %v", err)
	}
}

func TestClusterOfOne(t *testing.T) {
	c := newCluster(t)
	c.start("solo", 0)
	if got := c.waitLeader(nil); got != "solo" {
		t.Fatalf("leader %q, want solo", got)
	}
	select {
	case v := <-c.nodes["solo"].LeadershipCh():
		if !v {
			t.Error("first leadership event false")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no leadership event")
	}
	if err := c.nodes["solo"].Barrier(t.Context()); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

func TestBootstrapExpectAnyOrder(t *testing.T) {
	tests := []struct {
		name  string
		order []string
	}{
		{name: "sorted", order: []string{"a", "b", "c"}},
		{name: "reversed", order: []string{"c", "b", "a"}},
		{name: "middle first", order: []string{"b", "c", "a"}},
		{name: "last between", order: []string{"a", "c", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			for _, name := range tc.order {
				c.start(name, 3)
			}
			c.waitServers("a", "b", "c")
			leader := c.waitLeader(nil)
			if _, err := c.nodes[leader].Apply(t.Context(), []byte("x")); err != nil {
				t.Fatalf("apply: %v", err)
			}
			c.waitApplied("x")
		})
	}
}

func TestJoinerNeverBootstraps(t *testing.T) {
	c := MakeCluster(t, 3)
	c.waitServers("n1", "n2", "n3")

	// A fourth manager expecting 3 sees peers with state and waits; the
	// leader adds it.
	c.start("n4", 3)
	c.waitServers("n1", "n2", "n3", "n4")
	leader := c.waitLeader(nil)
	if _, err := c.nodes[leader].Apply(t.Context(), []byte("x")); err != nil {
		t.Fatalf("apply: %v", err)
	}
	c.waitApplied("x")
}

func TestRestartWithEmptyDataDir(t *testing.T) {
	c := MakeCluster(t, 3)
	leader := c.waitLeader(nil)
	if _, err := c.nodes[leader].Apply(t.Context(), []byte("before")); err != nil {
		t.Fatalf("apply: %v", err)
	}

	// A follower comes back under the same name and address with
	// nothing: it must not bootstrap, and must catch up.
	var follower string
	for name := range c.nodes {
		if name != leader {
			follower = name
			break
		}
	}
	c.stop(follower)
	c.start(follower, 3)
	c.waitServers("n1", "n2", "n3")
	c.waitApplied("before")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{name: "empty name", mutate: func(c *Config) { c.Name = "" }},
		{name: "empty data dir", mutate: func(c *Config) { c.DataDir = "" }},
		{name: "no fsm", mutate: func(c *Config) { c.FSM = nil }},
		{name: "negative expect", mutate: func(c *Config) { c.BootstrapExpect = -1 }},
		{name: "expect without discovery", mutate: func(c *Config) { c.BootstrapExpect = 3 }},
		{name: "lease over heartbeat", mutate: func(c *Config) {
			c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout
		}},
		{name: "election under heartbeat", mutate: func(c *Config) {
			c.ElectionTimeout = c.HeartbeatTimeout / 2
		}},
		{name: "unspecified bind", mutate: func(c *Config) { c.BindAddr = "0.0.0.0" }},
		{name: "no snapshot retain", mutate: func(c *Config) { c.SnapshotRetain = 0 }},
	}
	ok := DefaultConfig()
	ok.Name, ok.DataDir, ok.BindAddr, ok.FSM = "m1", "/tmp/x", "127.0.0.1", &testFSM{}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
}
