package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeRaft hands out leadership changes and barrier results.
type fakeRaft struct {
	ch       chan bool
	leader   atomic.Bool
	barriers chan error // each Barrier call takes one result, or waits for ctx
	calls    atomic.Int32
}

func (f *fakeRaft) LeadershipCh() <-chan bool { return f.ch }
func (f *fakeRaft) IsLeader() bool            { return f.leader.Load() }

func (f *fakeRaft) Barrier(ctx context.Context) error {
	f.calls.Add(1)
	select {
	case err := <-f.barriers:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fakeEngine records SetEnabled calls.
type fakeEngine struct {
	mu    sync.Mutex
	calls []bool
}

func (e *fakeEngine) SetEnabled(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, on)
}

func (e *fakeEngine) history() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.calls)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func engineHistory(e *fakeEngine, want string) func() error {
	return func() error {
		if got := e.history(); got != want {
			return fmt.Errorf("engine calls %s, want %s", got, want)
		}
		return nil
	}
}

func startFollower(t *testing.T) (*fakeRaft, *fakeEngine, context.CancelFunc, chan struct{}) {
	r := &fakeRaft{ch: make(chan bool), barriers: make(chan error, 4)}
	e := &fakeEngine{}
	l := &leadershipFollower{raft: r, engine: e, retry: time.Millisecond,
		log: hclog.New(&hclog.LoggerOptions{Output: hclog.DefaultOutput, Level: hclog.Off})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r, e, cancel, done
}

func TestLeadershipEnablesAfterBarrier(t *testing.T) {
	r, e, _, _ := startFollower(t)

	r.leader.Store(true)
	r.barriers <- errors.New("timed out")
	r.barriers <- nil
	r.ch <- true
	waitFor(t, engineHistory(e, "[true]"))
	if n := r.calls.Load(); n != 2 {
		t.Fatalf("%d barrier calls, want 2 (one failed, one retried)", n)
	}

	r.leader.Store(false)
	r.ch <- false
	waitFor(t, engineHistory(e, "[true false]"))
}

func TestLeadershipLostDuringBarrier(t *testing.T) {
	r, e, _, _ := startFollower(t)

	r.leader.Store(true)
	r.ch <- true // the barrier blocks: no result queued
	waitFor(t, func() error {
		if r.calls.Load() == 0 {
			return errors.New("no barrier call yet")
		}
		return nil
	})
	r.leader.Store(false)
	r.ch <- false
	waitFor(t, engineHistory(e, "[false]"))
}

func TestLeadershipStopDisablesEngine(t *testing.T) {
	r, e, cancel, done := startFollower(t)

	r.leader.Store(true)
	r.barriers <- nil
	r.ch <- true
	waitFor(t, engineHistory(e, "[true]"))

	cancel()
	<-done
	if got := e.history(); got != "[true false]" {
		t.Fatalf("engine calls %s after stop, want [true false]", got)
	}
}
