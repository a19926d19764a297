package gossip

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultPort is the gossip port (TCP and UDP) used when a join address
// carries none, and the port DefaultConfig binds.
const DefaultPort = 7073

// MaxMetaSize is the largest encoded Meta memberlist can carry.
const MaxMetaSize = 512

// Sentinel errors returned by this package.
var (
	// ErrInvalidConfig wraps every Config.Validate failure.
	ErrInvalidConfig = errors.New("invalid gossip config")
	// ErrNoAddrs is returned by Join when given no addresses.
	ErrNoAddrs = errors.New("no addresses to join")
)

// Meta is what every node publishes about itself, as JSON in its
// memberlist node meta (at most MaxMetaSize bytes once encoded).
type Meta struct {
	Role     string `json:"role"` // "manager" or "worker"
	Name     string `json:"name"`
	Address  string `json:"address"` // IP the node's services listen on
	RPCPort  int    `json:"rpc_port,omitempty"`
	HTTPPort int    `json:"http_port,omitempty"`
	RaftPort int    `json:"raft_port,omitempty"`
	DNSPort  int    `json:"dns_port,omitempty"`
}

// Config configures a Pool. Zero durations and a zero SuspicionMult
// take the values of DefaultConfig.
//
// The timings are tuned for a LAN or loopback, where a round trip is
// well under a millisecond and we want a dead node noticed in about two
// seconds rather than memberlist's LAN default of five or more:
// a node is probed every ProbeInterval; a probe unanswered after
// ProbeTimeout (direct, then through IndirectChecks peers) makes it
// suspect; a suspect not refuted within
// SuspicionMult * max(1, log10(n)) * ProbeInterval is declared dead
// (1.5s for clusters below ten nodes). Gossip goes out every
// GossipInterval so the verdict spreads within a few hundred
// milliseconds. On a lossy WAN these values would cause false suspicions.
type Config struct {
	// Name is the node name, unique in the cluster. Required.
	Name string
	// BindAddr is the IP to bind TCP and UDP to. Required.
	BindAddr string
	// Port is the TCP and UDP port; 0 picks a free port (see Pool.Port).
	Port int
	// Meta is published to every other member.
	Meta Meta
	// Logger receives the pool's and memberlist's logs under the name
	// "gossip", each with the key node=Name once (added unless Logger
	// attaches node already); other members are named by the key
	// member. Nil discards them.
	Logger hclog.Logger

	// ProbeInterval is the time between failure probes (default 500ms).
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe ack (default 250ms).
	ProbeTimeout time.Duration
	// SuspicionMult scales the suspicion timeout (default 3).
	SuspicionMult int
	// GossipInterval is the time between gossip rounds (default 100ms).
	GossipInterval time.Duration
	// RetryJoinInterval is the pause between RetryJoin attempts
	// (default 500ms).
	RetryJoinInterval time.Duration
	// RejoinInterval is the pause between two rounds of Rejoin
	// (default 5s; see Pool.Rejoin).
	RejoinInterval time.Duration
}

// DefaultConfig returns a Config with the LAN timings described on
// Config and Port set to DefaultPort; Name and BindAddr are left empty.
func DefaultConfig() Config {
	return Config{
		Port:              DefaultPort,
		ProbeInterval:     500 * time.Millisecond,
		ProbeTimeout:      250 * time.Millisecond,
		SuspicionMult:     3,
		GossipInterval:    100 * time.Millisecond,
		RetryJoinInterval: 500 * time.Millisecond,
		RejoinInterval:    5 * time.Second,
	}
}

// withDefaults fills zero timings from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ProbeInterval == 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = d.SuspicionMult
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = d.GossipInterval
	}
	if c.RetryJoinInterval == 0 {
		c.RetryJoinInterval = d.RetryJoinInterval
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = d.RejoinInterval
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
// Zero timings are valid (they mean the defaults).
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.BindAddr == "":
		return fmt.Errorf("%w: node %q: empty bind address",
			ErrInvalidConfig, c.Name)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("%w: node %q: port %d out of range",
			ErrInvalidConfig, c.Name, c.Port)
	case c.ProbeInterval < 0 || c.ProbeTimeout < 0 ||
		c.GossipInterval < 0 || c.RetryJoinInterval < 0 ||
		c.RejoinInterval < 0:
		return fmt.Errorf("%w: node %q: negative interval",
			ErrInvalidConfig, c.Name)
	case c.SuspicionMult < 0:
		return fmt.Errorf("%w: node %q: negative suspicion multiplier",
			ErrInvalidConfig, c.Name)
	case c.ProbeInterval != 0 && c.ProbeTimeout > c.ProbeInterval:
		return fmt.Errorf("%w: node %q: probe timeout %s longer than "+
			"probe interval %s", ErrInvalidConfig, c.Name,
			c.ProbeTimeout, c.ProbeInterval)
	}
	return nil
}
