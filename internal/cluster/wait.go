package cluster

import (
	"errors"
	"fmt"
	"time"
)

// PollInterval is how often WaitFor checks its condition.
const PollInterval = 200 * time.Millisecond

// ErrTimeout is wrapped by WaitFor when its condition never held.
var ErrTimeout = errors.New("timed out")

// WaitFor calls cond until it returns nil or timeout passes. On timeout the
// error names the last reason cond gave, that is what was not yet true.
func WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
		}
		time.Sleep(PollInterval)
	}
}
