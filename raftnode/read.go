package raftnode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// readBarrierTimeout bounds the enqueueing of the barrier a new term's
// first consistent read runs; the barrier is shared by every read of
// the term, so no single caller's deadline applies to it.
const readBarrierTimeout = 10 * time.Second

// readAttempts bounds the retries of a consistent read whose term
// changed under it (this node lost leadership and won it back).
const readAttempts = 3

// readState is a Node's consistent-read bookkeeping: the term whose
// barrier has been applied, and the VerifyLeader rounds that readers
// share. Its zero value is ready to use.
type readState struct {
	mu          sync.Mutex
	barrierTerm uint64       // the last term whose barrier was applied
	barrier     *termBarrier // the barrier in flight, nil if none
	verifying   bool         // a VerifyLeader round is in flight
	next        *verifyRound // the round after it, gathering readers

	// rounds counts the VerifyLeader rounds started, for tests.
	rounds atomic.Uint64
}

// termBarrier is one Raft barrier that every read of a term waits for.
type termBarrier struct {
	term uint64
	done chan struct{}
	err  error // set before done is closed
}

// verifyRound is one VerifyLeader call that every reader who joined it
// waits for.
type verifyRound struct {
	done chan struct{}
	err  error // set before done is closed
}

// ConsistentRead returns nil once a read of this node's FSM made after
// it is linearizable: this node leads, its FSM has applied every entry
// of earlier terms (a barrier, once per term), and a quorum confirmed
// during the call that it still leads (raft's VerifyLeader). It is
// etcd's ReadIndex without the index: an entry of this term is applied
// on the leader before its Apply returns, so the FSM holds every write
// acknowledged so far.
//
// Concurrent callers share VerifyLeader rounds: a caller joins the next
// round to start, never one already in flight, whose answer may predate
// the call. On a follower it fails at once with raft.ErrNotLeader; on a
// leader that cannot reach a quorum, within the leader lease, with
// raft.ErrLeadershipLost or raft.ErrNotLeader; errors are wrapped and
// name this manager. ctx bounds the wait.
//
// TODO: raft's VerifyLeader also counts a follower's answer to a
// heartbeat that was already in flight when it was called (notifyAll
// takes every waiting future), so a leader frozen with such an answer
// unread could take it, on waking, as confirmation; tagging heartbeats
// with the round they answer, as etcd's ReadIndex does, needs a change
// in hashicorp/raft.
func (n *Node) ConsistentRead(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		term := n.raft.CurrentTerm()
		if !n.IsLeader() {
			return n.readErr("not the leader", raft.ErrNotLeader)
		}
		if err := n.termBarrier(ctx, term); err != nil {
			return n.readErr("apply the earlier terms' entries", err)
		}
		if err := n.verifyLeader(ctx); err != nil {
			return n.readErr("leadership not confirmed by a quorum", err)
		}

		// Leadership lost and won again meanwhile: the barrier may be
		// of the old term, and the verification of the new one.
		if n.raft.CurrentTerm() == term {
			return nil
		}
		if attempt == readAttempts {
			return n.readErr("term keeps changing", raft.ErrLeadershipLost)
		}
	}
}

// readErr wraps a consistent read's failure with this manager's name
// and the step that failed.
func (n *Node) readErr(step string, err error) error {
	return fmt.Errorf("manager %q: consistent read: %s: %w", n.cfg.Name, step, err)
}

// termBarrier waits until a barrier of term has been applied, starting
// one unless it is done or in flight.
func (n *Node) termBarrier(ctx context.Context, term uint64) error {
	rs := &n.reads
	rs.mu.Lock()
	if rs.barrierTerm >= term {
		rs.mu.Unlock()
		return nil
	}
	b := rs.barrier
	if b == nil || b.term != term {
		b = &termBarrier{term: term, done: make(chan struct{})}
		rs.barrier = b
		go n.runBarrier(b)
	}
	rs.mu.Unlock()

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return b.err
	}
}

// runBarrier runs b and records its term once applied. A barrier that
// raft runs in a later term than b's is harmless: that term's readers
// find barrierTerm below their term and run their own.
func (n *Node) runBarrier(b *termBarrier) {
	err := n.raft.Barrier(readBarrierTimeout).Error()

	rs := &n.reads
	rs.mu.Lock()
	if err == nil && b.term > rs.barrierTerm {
		rs.barrierTerm = b.term
	}
	if rs.barrier == b {
		rs.barrier = nil
	}
	b.err = err
	rs.mu.Unlock()
	close(b.done)
}

// verifyLeader joins the next VerifyLeader round and waits for it.
func (n *Node) verifyLeader(ctx context.Context) error {
	r := n.joinRound()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return r.err
	}
}

// joinRound returns the round the caller waits for: a new one started
// now when none is in flight, else the one that starts when the round
// in flight ends, shared by everyone who arrives meanwhile.
func (n *Node) joinRound() *verifyRound {
	rs := &n.reads
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.verifying {
		if rs.next == nil {
			rs.next = &verifyRound{done: make(chan struct{})}
		}
		return rs.next
	}
	rs.verifying = true
	r := &verifyRound{done: make(chan struct{})}
	go n.runRounds(r)
	return r
}

// runRounds runs r, then the rounds gathered while each ran, until none
// is waiting. Raft answers every VerifyLeader future, with an error at
// the latest when it steps down or shuts down, so this ends.
func (n *Node) runRounds(r *verifyRound) {
	rs := &n.reads
	for r != nil {
		rs.rounds.Add(1)
		r.err = n.raft.VerifyLeader().Error()

		rs.mu.Lock()
		done := r
		r, rs.next = rs.next, nil
		if r == nil {
			rs.verifying = false
		}
		rs.mu.Unlock()
		close(done.done)
	}
}
