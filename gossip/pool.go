package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Pool is this process's membership in the gossip cluster. Create it
// with New; it runs until Shutdown. Its methods are safe for concurrent
// use.
type Pool struct {
	cfg     Config
	log     hclog.Logger
	list    *memberlist.Memberlist
	members *members

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	shutdownErr  error
	wg           sync.WaitGroup // RetryJoin and Rejoin goroutines
}

// New validates cfg, binds BindAddr:Port (TCP and UDP) and starts
// gossiping. The pool knows only itself until Join or RetryJoin; Rejoin
// keeps it joined to the members it has seen.
//
// TODO: a node started under the name another node has in the pool is
// refused by memberlist on the others ("Conflicting address" in their
// log) and waits without saying why; a ConflictDelegate that reports
// the clash, and a check of the name against the pool after the first
// join, would let a manager exit with the reason as a worker does.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// Every line names this node once: a caller such as the agent may
	// have attached the key already.
	log := cfg.Logger.Named("gossip")
	if !implies(log, "node") {
		log = log.With("node", cfg.Name)
	}

	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("node %q: encode meta: %w", cfg.Name, err)
	}
	if len(meta) > MaxMetaSize {
		return nil, fmt.Errorf("%w: node %q: meta is %d bytes, limit %d",
			ErrInvalidConfig, cfg.Name, len(meta), MaxMetaSize)
	}

	p := &Pool{
		cfg:        cfg,
		log:        log,
		members:    newMembers(log),
		shutdownCh: make(chan struct{}),
	}
	mc := memberlistConfig(cfg, log)
	mc.Delegate = &delegate{meta: meta}
	mc.Events = p.members

	p.list, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("node %q: start gossip on %s: %w",
			cfg.Name, net.JoinHostPort(cfg.BindAddr,
				strconv.Itoa(cfg.Port)), err)
	}
	log.Info("gossip started", "addr", p.Addr())
	return p, nil
}

// implies reports whether log attaches key to every line.
func implies(log hclog.Logger, key string) bool {
	args := log.ImpliedArgs()
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == key {
			return true
		}
	}
	return false
}

// memberlistConfig translates cfg into memberlist's LAN config.
func memberlistConfig(cfg Config, log hclog.Logger) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.Port
	mc.AdvertisePort = cfg.Port
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.Logger = log.StandardLogger(&hclog.StandardLoggerOptions{
		InferLevels: true,
	})
	mc.LogOutput = nil

	// A restarted node keeps its name but may come back on another
	// address (a new container IP); let it reclaim its name once the
	// old incarnation has been dead for a while.
	mc.DeadNodeReclaimTime = 10 * cfg.ProbeInterval
	return mc
}

// Addr is the host:port the pool listens on (TCP and UDP).
func (p *Pool) Addr() string {
	return net.JoinHostPort(p.cfg.BindAddr, strconv.Itoa(p.Port()))
}

// Port is the bound gossip port; it differs from Config.Port only when
// that was 0.
func (p *Pool) Port() int {
	return int(p.list.LocalNode().Port)
}

// Join contacts each address ("ip", "host", "ip:port"; the port
// defaults to DefaultPort) and merges its view of the cluster. It
// returns how many addresses answered; the error is non-nil only if
// none did.
func (p *Pool) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, ErrNoAddrs
	}
	full := make([]string, len(addrs))
	for i, a := range addrs {
		full[i] = withPort(a, DefaultPort)
	}
	n, err := p.list.Join(full)
	if n > 0 {
		return n, nil
	}
	return 0, fmt.Errorf("node %q: join %v: %w", p.cfg.Name, full, err)
}

// withPort adds port to addr unless it already carries one.
func withPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	// A bare IPv6 address, or a host without a port.
	return net.JoinHostPort(addr, strconv.Itoa(port))
}

// RetryJoin joins addrs in the background, retrying every
// Config.RetryJoinInterval and logging a warning per failed attempt,
// until one attempt reaches at least one address, ctx is cancelled or
// the pool shuts down. It returns at once.
func (p *Pool) RetryJoin(ctx context.Context, addrs []string) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.retryJoin(ctx, addrs)
	}()
}

func (p *Pool) retryJoin(ctx context.Context, addrs []string) {
	t := time.NewTicker(p.cfg.RetryJoinInterval)
	defer t.Stop()

	for attempt := 1; ; attempt++ {
		n, err := p.Join(addrs)
		if err == nil {
			p.log.Info("joined gossip", "contacted", n,
				"attempts", attempt)
			return
		}
		p.log.Warn("join failed, retrying", "attempt", attempt,
			"error", err)

		select {
		case <-ctx.Done():
			return
		case <-p.shutdownCh:
			return
		case <-t.C:
		}
	}
}

// Members returns every member ever seen, this node included, alive or
// not, sorted by name.
func (p *Pool) Members() []Member {
	return p.members.list()
}

// Changed returns a channel that is closed at the next membership event
// (join, death, leave or Meta update). Call it again for the next one.
func (p *Pool) Changed() <-chan struct{} {
	return p.members.watch()
}

// Leave tells the cluster this node is leaving, waiting up to timeout
// for the message to spread. Call Shutdown afterwards.
func (p *Pool) Leave(timeout time.Duration) error {
	if err := p.list.Leave(timeout); err != nil {
		return fmt.Errorf("node %q: leave gossip: %w", p.cfg.Name, err)
	}
	return nil
}

// Shutdown stops gossiping without telling anyone: the others will
// declare this node dead. It waits for RetryJoin and Rejoin goroutines
// to end and is safe to call more than once.
func (p *Pool) Shutdown() error {
	p.shutdownOnce.Do(func() {
		close(p.shutdownCh)
		if err := p.list.Shutdown(); err != nil {
			p.shutdownErr = fmt.Errorf("node %q: stop gossip: %w",
				p.cfg.Name, err)
		}
		p.wg.Wait()
	})
	return p.shutdownErr
}

// delegate publishes this node's Meta. memberlist requires the whole
// Delegate interface; user messages and state exchange are unused.
type delegate struct {
	meta []byte
}

// NodeMeta implements memberlist.Delegate. New has checked the size
// against MaxMetaSize, which is memberlist's limit.
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}
