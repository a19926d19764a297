package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/agent/dns"
	"github.com/hivemind-orch/hivemind/agent/ingress"
	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Errors returned by Run.
var (
	// ErrJoinRefused means a manager refused the join token. Run returns
	// it wrapped with the manager's message and does not retry.
	ErrJoinRefused = errors.New("join refused")

	// ErrAlreadyRunning is returned by a second call of Run.
	ErrAlreadyRunning = errors.New("agent already running")
)

// rpcTimeout bounds each unary call to a manager.
const rpcTimeout = 5 * time.Second

// leaveTimeout bounds the gossip leave broadcast on shutdown.
const leaveTimeout = 5 * time.Second

// pool is the part of the gossip pool the agent uses; tests replace it.
type pool interface {
	RetryJoin(ctx context.Context, addrs []string)
	Join(addrs []string) (int, error)
	Members() []gossip.Member
	Changed() <-chan struct{}
	Leave(timeout time.Duration) error
	Shutdown() error
}

// Agent is a worker node. Create it with New and start it with Run.
type Agent struct {
	cfg  Config
	log  hclog.Logger
	mgrs *managers

	// newPool creates the gossip pool; tests swap in a fake.
	newPool func(gossip.Config) (pool, error)

	// rejoin asks rejoinManagers for a gossip join now (capacity 1).
	rejoin chan struct{}

	// dnsPort is the port the DNS server got, set by Run before it
	// registers; it differs from cfg.DNSPort when that is 0.
	dnsPort int

	running atomic.Bool
}

// New checks cfg and returns an Agent. It opens no port and touches no
// container: Run does.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default()
	}

	var join []string
	for _, j := range cfg.Join {
		addr, err := withDefaultPort(j, DefaultManagerRPCPort)
		if err != nil {
			return nil, err // Validate already checked; kept for safety
		}
		join = append(join, addr)
	}

	a := &Agent{
		cfg:    cfg,
		log:    cfg.Logger.Named("agent").With("node", cfg.Name),
		mgrs:   newManagers(join, dialOptions()),
		rejoin: make(chan struct{}, 1),
	}
	a.newPool = func(c gossip.Config) (pool, error) {
		return gossip.New(c)
	}
	return a, nil
}

// Run registers the worker, joins the gossip pool and runs its tasks until
// ctx is done, then leaves the pool and returns nil. Containers keep running
// after Run returns so that a restarted agent finds them. Run returns early
// with an error wrapping ErrJoinRefused when the token is refused, or with
// an error when the runtime or the gossip pool cannot be set up.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer a.mgrs.close()

	rt, err := a.openRuntime()
	if err != nil {
		return err
	}
	if a.cfg.Runtime == nil {
		defer a.closeRuntime(rt)
	}

	logDir := filepath.Join(a.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("log dir %q: %w", logDir, err)
	}

	// What runs now is recorded before anything else so that nothing is
	// destroyed before the first assignment list says what should run.
	// Only this worker's own containers: another worker may share the
	// namespace, and its containers are not ours to adopt or remove.
	listed, err := rt.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	existing := ownedContainers(listed, a.cfg.Name, a.log)

	// Ingress and DNS serve nothing until the first endpoint set; the
	// DNS port is bound first so that gossip and Register advertise it.
	rep := newReporter(a.cfg.Name, a.mgrs, a.cfg.ReportInterval, a.log)
	rep.recovered = a.requestRejoin
	rep.hung = a.redial
	tr, err := a.openTraffic(rep)
	if err != nil {
		return err
	}
	defer tr.close()

	p, err := a.newPool(a.gossipConfig())
	if err != nil {
		return fmt.Errorf("gossip on %s:%d: %w",
			a.cfg.BindAddr, a.cfg.GossipPort, err)
	}
	defer a.leave(p)

	// Every goroutine below is done before the deferred calls above run.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	r := newRunner(runnerConfig{
		log:      a.log.Named("runner"),
		rt:       rt,
		rep:      rep,
		node:     a.cfg.Name,
		bindAddr: a.cfg.BindAddr,
		logDir:   logDir,
		conns:    tr.proxy.ActiveConns,
	}, existing)
	assign := make(chan assignment)
	goTracked(&wg, func() { r.run(runCtx, assign) })

	resp, err := a.register(runCtx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	a.mgrs.set(rpcAddrs(resp.GetManagers()))

	seeds := a.gossipJoin(resp)
	goTracked(&wg, func() { p.RetryJoin(runCtx, seeds) })
	goTracked(&wg, func() { a.followManagers(runCtx, p) })
	goTracked(&wg, func() { a.rejoinManagers(runCtx, p, seeds) })
	goTracked(&wg, func() { rep.run(runCtx) })
	goTracked(&wg, func() { a.watch(runCtx, assign) })
	goTracked(&wg, func() { a.watchEndpoints(runCtx, tr) })

	<-runCtx.Done()
	a.log.Info("shutting down; containers keep running")
	return nil
}

func goTracked(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}

// openRuntime returns the configured runtime or connects to containerd.
func (a *Agent) openRuntime() (runtime.Runtime, error) {
	if a.cfg.Runtime != nil {
		return a.cfg.Runtime, nil
	}
	rt, err := runtime.NewContainerd(runtime.Config{
		Socket:             a.cfg.ContainerdSocket,
		Namespace:          a.cfg.ContainerdNamespace,
		InsecureRegistries: a.cfg.InsecureRegistries,
		Logger:             a.log.Named("runtime"),
	})
	if err != nil {
		return nil, err // it names the socket
	}
	return rt, nil
}

func (a *Agent) closeRuntime(rt runtime.Runtime) {
	if err := rt.Close(); err != nil {
		a.log.Warn("closing the runtime", "error", err)
	}
}

// openTraffic creates the ingress proxy and starts the DNS server, both
// on the bind address. The proxy opens the ingress ports as endpoint
// sets name them.
func (a *Agent) openTraffic(rep *reporter) (*traffic, error) {
	log := a.log.Named("traffic")
	icfg := ingress.DefaultConfig()
	icfg.BindAddr = a.cfg.BindAddr
	icfg.Logger = a.log
	proxy, err := ingress.New(icfg)
	if err != nil {
		return nil, fmt.Errorf("ingress on %s: %w", a.cfg.BindAddr, err)
	}

	dcfg := dns.DefaultConfig()
	dcfg.BindAddr = a.cfg.BindAddr
	dcfg.Port = a.cfg.DNSPort
	dcfg.Logger = a.log
	srv, err := dns.New(dcfg)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		_ = proxy.Close() // it has opened nothing yet
		return nil, fmt.Errorf("dns on %s:%d: %w",
			a.cfg.BindAddr, a.cfg.DNSPort, err)
	}
	a.dnsPort = a.cfg.DNSPort
	if ua, err := net.ResolveUDPAddr("udp", srv.Addr()); err == nil {
		a.dnsPort = ua.Port
	}
	return &traffic{proxy: proxy, dns: srv, rep: rep, log: log}, nil
}

func (a *Agent) gossipConfig() gossip.Config {
	c := gossip.DefaultConfig()
	c.Name = a.cfg.Name
	c.BindAddr = a.cfg.BindAddr
	c.Port = a.cfg.GossipPort
	c.Logger = a.log // gossip names its logger; a.log has node already
	c.Meta = gossip.Meta{
		Role:    pb.RoleWorker,
		Name:    a.cfg.Name,
		Address: a.cfg.BindAddr,
		DNSPort: a.dnsPort,
	}
	return c
}

// gossipJoin returns the managers' gossip addresses from a Register
// response, or the join hosts at the default gossip port if it has none.
func (a *Agent) gossipJoin(resp *pb.RegisterResponse) []string {
	if addrs := gossipAddrs(resp.GetManagers()); len(addrs) > 0 {
		return addrs
	}
	var out []string
	for _, j := range a.mgrs.order() {
		host, _, err := net.SplitHostPort(j)
		if err != nil {
			continue // every entry went through withDefaultPort
		}
		out = append(out, net.JoinHostPort(host,
			strconv.Itoa(DefaultGossipPort)))
	}
	return out
}

func (a *Agent) leave(p pool) {
	if err := p.Leave(leaveTimeout); err != nil {
		a.log.Warn("leaving the gossip pool", "error", err)
	}
	if err := p.Shutdown(); err != nil {
		a.log.Warn("shutting down gossip", "error", err)
	}
}

// register calls Register on each manager in turn until one accepts.
func (a *Agent) register(ctx context.Context) (*pb.RegisterResponse, error) {
	req := &pb.RegisterRequest{
		Token:      a.cfg.Token,
		Name:       a.cfg.Name,
		Address:    a.cfg.BindAddr,
		GossipPort: int32(a.cfg.GossipPort),
		DnsPort:    int32(a.dnsPort),
	}
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for {
		for _, addr := range a.mgrs.order() {
			resp, err := a.registerAt(ctx, addr, req)
			if err == nil {
				a.mgrs.succeeded(addr)
				a.log.Info("registered", "manager", addr,
					"managers", len(resp.GetManagers()))
				return resp, nil
			}
			switch status.Code(err) {
			case codes.PermissionDenied, codes.Unauthenticated:
				return nil, fmt.Errorf("%w by manager %s: %s",
					ErrJoinRefused, addr, status.Convert(err).Message())
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			a.log.Warn("register failed", "manager", addr, "error", err)
			a.mgrs.failed(addr)
		}
		if !sleepCtx(ctx, bo.next()) {
			return nil, ctx.Err()
		}
	}
}

func (a *Agent) registerAt(ctx context.Context, addr string,
	req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	c, err := a.mgrs.client(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return c.Register(ctx, req)
}

// followManagers keeps the manager list in step with the alive managers
// seen in gossip, so that the agent finds managers added after it
// registered and stops trying ones that are gone.
func (a *Agent) followManagers(ctx context.Context, p pool) {
	for {
		changed := p.Changed()
		var addrs []string
		for _, m := range p.Members() {
			if m.Alive && m.Meta.Role == pb.RoleManager && m.Meta.RPCPort > 0 {
				addrs = append(addrs, net.JoinHostPort(m.Meta.Address,
					strconv.Itoa(m.Meta.RPCPort)))
			}
		}
		sort.Strings(addrs)
		a.mgrs.set(addrs)

		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// rejoinManagers joins the managers' gossip addresses again while the
// pool has seen no alive manager for rejoinAfter, every probe interval
// until one is back, whenever requestRejoin asks, and whenever a manager
// it saw dead is alive again (see managersBack).
//
// Without it, a worker whose managers were all restarted stays in a
// pool of its own: the restarted managers join only each other, and the
// worker's pool neither contacts a node it has declared dead nor tells a
// restarted one that still answers its old name's pings about itself, so
// the new leader would mark this worker down. seeds are the addresses
// from Register; the last known address of every manager seen is added.
func (a *Agent) rejoinManagers(ctx context.Context, p pool, seeds []string) {
	t := time.NewTicker(rejoinCheck)
	defer t.Stop()

	var noneSince time.Time // zero while a manager is alive
	warned := false         // once per episode without one
	var back comebacks
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.rejoin:
			addrs, _ := managerGossipAddrs(p.Members(), seeds)
			a.log.Info("manager reachable again, rejoining gossip",
				"addrs", addrs)
			a.join(p, addrs)
			continue
		case <-t.C:
		}

		members := p.Members()
		addrs, alive := managerGossipAddrs(members, seeds)
		if returned := back.update(members); len(returned) > 0 {
			a.managersBack(p, returned, addrs)
		}
		switch {
		case alive:
			if warned {
				a.log.Info("manager alive in gossip again")
			}
			noneSince, warned = time.Time{}, false
			continue
		case noneSince.IsZero():
			noneSince = time.Now()
			continue
		case time.Since(noneSince) < rejoinAfter:
			continue
		}
		if !warned {
			a.log.Warn("no alive manager in gossip, rejoining",
				"addrs", addrs)
			warned = true
		}
		a.join(p, addrs)
	}
}

// requestRejoin asks rejoinManagers to join the managers' gossip now. The
// watcher calls it when an assignment stream opens after one broke: the
// managers may have restarted with pools that do not know this worker.
// The reporter calls it when reports go through again after failing: a
// partition that healed leaves the managers' pools holding this worker
// dead, and memberlist would tell it only at its next push-pull, up to
// 30s later, while a leader keeps it down.
func (a *Agent) requestRejoin() {
	select {
	case a.rejoin <- struct{}{}:
	default: // one is already pending
	}
}

// join joins addrs. A failure is expected while the managers are down,
// and the caller has already said why it joins.
//
// TODO: memberlist bounds each unreachable address by its TCP timeout
// (10s), which can delay shutdown; a join that takes a context would not.
func (a *Agent) join(p pool, addrs []string) {
	if _, err := p.Join(addrs); err != nil {
		a.log.Debug("gossip join failed", "error", err)
	}
}

// rejoinCheck is how often rejoinManagers looks at the pool: gossip's
// default probe interval, which the agent's pool uses. rejoinAfter is how
// long it must see no alive manager before joining, so that a worker
// still joining at start-up, or a view briefly without one, is left alone.
var (
	rejoinCheck = gossip.DefaultConfig().ProbeInterval
	rejoinAfter = 2 * rejoinCheck
)

// managerGossipAddrs returns seeds plus the gossip address of every
// manager in ms, alive or dead, without duplicates, and whether any
// manager is alive.
func managerGossipAddrs(ms []gossip.Member, seeds []string) ([]string, bool) {
	addrs := append([]string(nil), seeds...)
	alive := false
	for _, m := range ms {
		if m.Meta.Role != pb.RoleManager {
			continue
		}
		alive = alive || m.Alive
		if m.Addr != "" && !slices.Contains(addrs, m.Addr) {
			addrs = append(addrs, m.Addr)
		}
	}
	return addrs, alive
}

// backoff doubles a delay from min to max, with up to 20% jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.min
	case b.cur < b.max:
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur - time.Duration(rand.Int64N(int64(b.cur)/5+1))
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
