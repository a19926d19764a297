package cli

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Timings of a new leader's barrier.
const (
	// barrierTimeout bounds one Raft barrier attempt.
	barrierTimeout = 10 * time.Second
	// barrierRetry is the pause between failed attempts.
	barrierRetry = 500 * time.Millisecond
)

// leaderRaft is the part of *raftnode.Node that leadership needs.
type leaderRaft interface {
	LeadershipCh() <-chan bool
	Barrier(ctx context.Context) error
	IsLeader() bool
}

// engineSwitch is the part of *deploy.Engine that leadership needs.
type engineSwitch interface {
	SetEnabled(on bool)
}

// leadershipFollower switches the rollout engine with Raft leadership.
type leadershipFollower struct {
	raft   leaderRaft
	engine engineSwitch
	log    hclog.Logger
	retry  time.Duration // barrierRetry when zero
}

// run switches the engine on for each term of leadership, once a barrier
// has shown the store holds every committed entry, and off when the term
// ends. It returns when ctx is cancelled, with the engine off.
func (l *leadershipFollower) run(ctx context.Context) {
	endTerm := func() {}
	defer func() { endTerm() }()

	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-l.raft.LeadershipCh():
			endTerm()
			endTerm = func() {}
			if leader {
				endTerm = l.startTerm()
			}
		}
	}
}

// startTerm enables the engine after a barrier, in the background, and
// returns a function that cancels that and disables the engine.
func (l *leadershipFollower) startTerm() (end func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if l.barrier(ctx) {
			l.engine.SetEnabled(true)
		}
	}()
	return func() {
		cancel()
		<-done
		l.engine.SetEnabled(false)
	}
}

// barrier retries a Raft barrier until it succeeds (true) or the term
// ends (false).
func (l *leadershipFollower) barrier(ctx context.Context) bool {
	retry := l.retry
	if retry == 0 {
		retry = barrierRetry
	}
	for {
		bctx, cancel := context.WithTimeout(ctx, barrierTimeout)
		err := l.raft.Barrier(bctx)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil || !l.raft.IsLeader() {
			return false
		}
		l.log.Warn("raft barrier failed, retrying", "error", err)

		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}
