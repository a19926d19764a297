package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
)

// ErrInvalidConfig wraps every Config.Validate failure.
var ErrInvalidConfig = errors.New("invalid deploy config")

// Proposer commits a command through Raft and returns once it is applied
// on this node, with the log index or the FSM's error.
type Proposer interface {
	Propose(ctx context.Context, t fsm.CommandType, msg proto.Message) (uint64, error)
}

// Clock tells the leader's time. It is stamped into commands.
type Clock interface {
	Now() time.Time
}

// Liveness lists the gossip members this manager sees, alive or not.
type Liveness interface {
	Members() []gossip.Member
}

// Config configures an Engine.
type Config struct {
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// Proposer, Store and Liveness are required.
	Proposer Proposer
	Store    *fsm.Store
	Liveness Liveness
	// Clock defaults to the system clock.
	Clock Clock
	// Interval is how often Step runs when nothing changes (default
	// 250ms): deadlines and min_healthy_time pass without any event.
	Interval time.Duration
	// WorkerGrace is how long a worker's gossip member must be dead, and
	// this engine enabled, before the worker is marked down (default 5s).
	WorkerGrace time.Duration
	// RotationBound is how long a task asked to stop waits for every
	// live worker to confirm it has left their ingress and DNS before it
	// is taken out of rotation anyway, with a warning (default 5s).
	RotationBound time.Duration
	// NewID returns IDs for tasks and deployments (default: 16 hex
	// characters from crypto/rand).
	NewID func() string
	// MinVoters is this manager's --bootstrap-expect: while it leads,
	// the cluster meta's min_voters (the floor of the dead-manager
	// cleanup) is raised to it if lower.
	MinVoters int
}

// DefaultConfig returns a Config with every default filled in and the
// required fields empty.
func DefaultConfig() Config {
	return Config{
		Logger:        hclog.NewNullLogger(),
		Clock:         systemClock{},
		Interval:      250 * time.Millisecond,
		WorkerGrace:   5 * time.Second,
		RotationBound: 5 * time.Second,
		NewID:         NewID,
	}
}

// Validate reports a missing required field or a negative duration.
func (c Config) Validate() error {
	switch {
	case c.Proposer == nil:
		return fmt.Errorf("%w: no proposer", ErrInvalidConfig)
	case c.Store == nil:
		return fmt.Errorf("%w: no store", ErrInvalidConfig)
	case c.Liveness == nil:
		return fmt.Errorf("%w: no liveness", ErrInvalidConfig)
	case c.Interval < 0 || c.WorkerGrace < 0 || c.RotationBound < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	}
	return nil
}

// withDefaults fills the zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.WorkerGrace == 0 {
		c.WorkerGrace = d.WorkerGrace
	}
	if c.RotationBound == 0 {
		c.RotationBound = d.RotationBound
	}
	if c.NewID == nil {
		c.NewID = d.NewID
	}
	return c
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// NewID returns 16 random hex characters.
func NewID() string { return randomHex(8) }

// randomHex returns 2n hex characters from crypto/rand, which never
// fails on the platforms Go supports.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
