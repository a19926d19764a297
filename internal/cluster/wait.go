package cluster

import (
	"errors"
	"fmt"
	"time"
)

// PollInterval is how often WaitFor checks its condition.
const PollInterval = 200 * time.Millisecond

var (
	// ErrTimeout is wrapped by WaitFor when its condition never held.
	ErrTimeout = errors.New("timed out")
	// ErrAbort, wrapped by a condition's error, ends WaitFor at once: the
	// condition can no longer become true (a process it waits on died).
	ErrAbort = errors.New("gave up")
)

// WaitFor calls cond until it returns nil or timeout passes. On timeout the
// error names the last reason cond gave, that is what was not yet true. An
// error wrapping ErrAbort is returned at once.
func WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrAbort) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
		}
		time.Sleep(PollInterval)
	}
}
