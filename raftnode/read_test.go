package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// followersOf returns the running nodes other than leader.
func (c *cluster) followersOf(leader string) []string {
	var out []string
	for name := range c.nodes {
		if name != leader {
			out = append(out, name)
		}
	}
	return sorted(out)
}

// isolate cuts name off from every other node, both ways.
func (c *cluster) isolate(name string) {
	tr := c.trans[name]
	tr.DisconnectAll()
	for other, otr := range c.trans {
		if other != name {
			otr.Disconnect(tr.LocalAddr())
		}
	}
}

func TestConsistentReadOnLeaderAndFollowers(t *testing.T) {
	c := MakeCluster(t, 3)
	leader := c.waitLeader(nil)
	if _, err := c.nodes[leader].Apply(t.Context(), []byte("one")); err != nil {
		t.Fatalf("apply: %v", err)
	}

	if err := c.nodes[leader].ConsistentRead(t.Context()); err != nil {
		t.Fatalf("consistent read on leader %s: %v", leader, err)
	}
	if !c.fsms[leader].has("one") {
		t.Errorf("leader %s has not applied %q after a consistent read", leader, "one")
	}
	for _, name := range c.followersOf(leader) {
		err := c.nodes[name].ConsistentRead(t.Context())
		if !errors.Is(err, raft.ErrNotLeader) {
			t.Errorf("consistent read on follower %s: %v, want raft.ErrNotLeader", name, err)
		}
	}
}

// A leader cut off from the others stops confirming reads within its
// lease, and never confirms one once the majority has moved on, while
// the majority's new leader serves the writes made after the cut.
func TestConsistentReadRefusedOnPartitionedLeader(t *testing.T) {
	c := MakeCluster(t, 3)
	old := c.waitLeader(nil)
	if err := c.nodes[old].ConsistentRead(t.Context()); err != nil {
		t.Fatalf("consistent read before the cut: %v", err)
	}
	term := c.nodes[old].raft.CurrentTerm()

	// Right after the cut, a heartbeat answered before it may still
	// confirm the old leader (raft counts answers in flight): such a
	// read is linearizable as long as nobody else has moved to a later
	// term, since no other leader can exist yet.
	c.isolate(old)
	if err := c.nodes[old].ConsistentRead(t.Context()); err == nil {
		for _, f := range c.followersOf(old) {
			if got := c.nodes[f].raft.CurrentTerm(); got != term {
				t.Errorf("%s confirmed a read after the cut while %s was in term %d > %d",
					old, f, got, term)
			}
		}
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err := c.nodes[old].ConsistentRead(ctx)
		switch {
		case err == nil:
			return fmt.Errorf("partitioned %s still confirms reads", old)
		case !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNotLeader):
			t.Fatalf("consistent read on partitioned leader %s: %v, want leadership lost or not leader", old, err)
		}
		t.Logf("partitioned leader refused the read: %v", err)
		return nil
	})

	// The majority elects a leader of its own, whose reads see its writes.
	majority := &cluster{t: t, nodes: map[string]*Node{}, fsms: c.fsms}
	for _, name := range c.followersOf(old) {
		majority.nodes[name] = c.nodes[name]
	}
	leader := majority.waitLeader(map[string]bool{old: true})
	if _, err := c.nodes[leader].Apply(t.Context(), []byte("after the cut")); err != nil {
		t.Fatalf("apply on new leader %s: %v", leader, err)
	}
	if err := c.nodes[leader].ConsistentRead(t.Context()); err != nil {
		t.Fatalf("consistent read on new leader %s: %v", leader, err)
	}
	if err := c.nodes[old].ConsistentRead(t.Context()); err == nil {
		t.Errorf("partitioned %s served a consistent read while %s leads", old, leader)
	}
}

// A new leader whose state machine lags its log must not answer until it
// has applied what the previous leader committed.
func TestConsistentReadWaitsForEarlierTerms(t *testing.T) {
	c := MakeCluster(t, 3)
	old := c.waitLeader(nil)
	next := c.followersOf(old)[0]

	// Hold next's state machine: the entries reach its log, not its FSM.
	c.fsms[next].mu.Lock()
	held := true
	release := func() {
		if held {
			held = false
			c.fsms[next].mu.Unlock()
		}
	}
	defer release()

	for i := range 3 {
		if _, err := c.nodes[old].Apply(t.Context(), []byte(fmt.Sprintf("e%d", i))); err != nil {
			t.Fatalf("apply e%d: %v", i, err)
		}
	}
	if err := c.nodes[old].TransferLeadership(next); err != nil {
		t.Fatalf("transfer leadership to %s: %v", next, err)
	}
	if l := c.waitLeader(map[string]bool{old: true}); l != next {
		t.Fatalf("%s leads after the transfer to %s", l, next)
	}

	// While next's FSM is held no consistent read on it may succeed: it
	// waits, or refuses if it lost leadership meanwhile.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := c.nodes[next].ConsistentRead(ctx)
	cancel()
	switch {
	case err == nil:
		t.Fatalf("%s answered a consistent read with its FSM held", next)
	case !errors.Is(err, context.DeadlineExceeded):
		t.Logf("%s refused the read instead of waiting: %v", next, err)
	}

	// Released, whoever leads answers, with every entry applied.
	release()
	testutil.WaitFor(t, 5*time.Second, func() error {
		leader := c.waitLeader(nil)
		if err := c.nodes[leader].ConsistentRead(t.Context()); err != nil {
			return err
		}
		for i := range 3 {
			if e := fmt.Sprintf("e%d", i); !c.fsms[leader].has(e) {
				t.Fatalf("%s answered a consistent read without %q applied", leader, e)
			}
		}
		return nil
	})
}

// lanTransport is the in-memory transport with a network's latency on
// AppendEntries, heartbeats included: on the bare in-memory transport a
// VerifyLeader round ends before the next reader's goroutine runs.
type lanTransport struct {
	*raft.InmemTransport
	latency time.Duration
}

func (l *lanTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	time.Sleep(l.latency) // the simulated network, not synchronisation
	return l.InmemTransport.AppendEntries(id, target, args, resp)
}

func TestConsistentReadsShareRounds(t *testing.T) {
	c := newCluster(t)
	c.wrap = func(tr *raft.InmemTransport) raft.Transport {
		return &lanTransport{InmemTransport: tr, latency: 2 * time.Millisecond}
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		c.start(name, 3)
	}
	n := c.nodes[c.waitLeader(nil)]
	if err := n.ConsistentRead(t.Context()); err != nil {
		t.Fatalf("first consistent read: %v", err)
	}
	before := n.reads.rounds.Load()

	const readers = 200
	start := make(chan struct{})
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- n.ConsistentRead(t.Context())
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("consistent read: %v", err)
		}
	}
	rounds := n.reads.rounds.Load() - before
	t.Logf("%d concurrent reads took %d VerifyLeader rounds", readers, rounds)
	if rounds == 0 || rounds > readers/10 {
		t.Errorf("%d concurrent reads took %d VerifyLeader rounds, want 1 to %d",
			readers, rounds, readers/10)
	}
}

// A reader arriving while a round is in flight waits for the next one:
// the answer in flight may come from heartbeats sent before it arrived.
func TestJoinRoundNeverJoinsRoundInFlight(t *testing.T) {
	n := &Node{}
	n.reads.verifying = true // a round is in flight

	a, b := n.joinRound(), n.joinRound()
	if a != b {
		t.Error("two readers arriving during a round got different next rounds")
	}
	if n.reads.next != a {
		t.Error("a reader arriving during a round did not join the next round")
	}
	if got := n.reads.rounds.Load(); got != 0 {
		t.Errorf("%d rounds started while one was in flight, want 0", got)
	}
}
