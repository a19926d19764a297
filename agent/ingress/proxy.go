package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Protocols of a route.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
)

var (
	// ErrClosed is returned by Update after Close.
	ErrClosed = errors.New("ingress proxy closed")
	// ErrInvalidRoute is returned for a route that cannot be served: a
	// bad port or protocol, a port claimed twice, a bad backend address.
	ErrInvalidRoute = errors.New("invalid route")
	// ErrListen is returned when an ingress port cannot be opened.
	//
	// TODO: the worker only logs it, so an ingress port the worker uses
	// itself (its DNS or gossip port) is accepted at deploy and the app
	// shows healthy; reporting it in the worker's report, for app status
	// to show, would tell the operator.
	ErrListen = errors.New("cannot listen")
	// errNoBackend is returned by a pick when no untried backend is left.
	errNoBackend = errors.New("no healthy task")
)

// Backend is one task behind a route.
type Backend struct {
	// TaskID identifies the task in ActiveConns and in logs.
	TaskID string
	// Addr is the ip:port of a healthy, non-draining task.
	Addr string
}

// Route publishes one port of an app on an ingress port.
type Route struct {
	// App and Port name the app and its port, for logs.
	App, Port string
	// Protocol is "http" (proxied per request) or "tcp" (per connection).
	Protocol string
	// Listen is the ingress port, opened on Config.BindAddr.
	Listen int
	// Backends is the rotation; empty means no task can take traffic.
	Backends []Backend
}

// Config configures a Proxy.
type Config struct {
	// BindAddr is the IP the ingress ports are opened on; "" means every
	// interface.
	BindAddr string
	// Logger receives the proxy's logs; nil discards them.
	Logger hclog.Logger
	// DialTimeout bounds one connection attempt to a backend; zero means
	// one second.
	DialTimeout time.Duration
	// Retries is how many other backends are tried after a failed
	// attempt; zero means 2, a negative value means none.
	Retries int
}

// DefaultConfig returns a Config listening on every interface with a
// one-second dial timeout and 2 retries.
func DefaultConfig() Config {
	return Config{DialTimeout: time.Second, Retries: 2}
}

// Validate reports a BindAddr that is not an IP or a negative timeout.
func (c Config) Validate() error {
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("ingress: bind address %q is not an IP", c.BindAddr)
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("ingress: dial timeout %s is negative", c.DialTimeout)
	}
	return nil
}

// Proxy serves the ingress ports of a worker. Create it with New; it serves
// nothing until the first Update. Its methods are safe for concurrent use.
type Proxy struct {
	cfg    Config
	log    hclog.Logger
	dialer *net.Dialer
	active *activeCounts
	bufs   *bufferPool

	// ctx is cancelled by Close; every blocking operation selects on it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu serialises Update and Close and guards the fields below.
	mu         sync.Mutex
	closed     bool
	listeners  map[int]*listener
	transports map[string]*http.Transport

	// connsMu guards conns and servers, which Close tears down: proxied
	// TCP connections (both ends) and HTTP servers, including those of
	// removed ports still finishing their requests.
	connsMu     sync.Mutex
	connsClosed bool
	conns       map[net.Conn]struct{}
	servers     map[*http.Server]struct{}
}

// listener is one open ingress port.
type listener struct {
	port     int
	protocol string
	app      string
	ln       net.Listener
	pool     *pool
	srv      *http.Server // protocol http only
	log      hclog.Logger
}

// New returns a Proxy with no routes.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}

	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		cfg: cfg,
		log: cfg.Logger.Named("ingress"),
		dialer: &net.Dialer{
			Timeout:   cfg.DialTimeout,
			KeepAlive: 30 * time.Second,
		},
		active:     newActiveCounts(),
		bufs:       newBufferPool(),
		ctx:        ctx,
		cancel:     cancel,
		listeners:  make(map[int]*listener),
		transports: make(map[string]*http.Transport),
		conns:      make(map[net.Conn]struct{}),
		servers:    make(map[*http.Server]struct{}),
	}, nil
}

// ActiveConns returns the number of open proxied TCP connections and
// in-flight HTTP requests (including their response bodies) to a task,
// over every route.
func (p *Proxy) ActiveConns(taskID string) int {
	return p.active.get(taskID)
}

// Update makes routes the whole set of served routes. It opens the
// ingress ports that are new, closes those absent from routes (their open
// connections and requests finish) and swaps the backends of the others.
// When it returns, no new connection or request goes to a backend absent
// from routes; those already under way are counted by ActiveConns.
//
// A route that is invalid or whose port cannot be opened is skipped and
// reported in the returned error (wrapping ErrInvalidRoute or ErrListen);
// every other route still applies. After Close it returns ErrClosed.
func (p *Proxy) Update(routes []Route) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}

	var errs []error
	want := make(map[int]Route, len(routes))
	for _, r := range routes {
		if err := checkRoute(r, want); err != nil {
			errs = append(errs, err)
			continue
		}
		want[r.Listen] = r
	}

	// Swap or open the wanted ports, building the backend sets first so
	// that an HTTP backend's transport exists before it can be picked.
	used := make(map[string]bool)
	for port, r := range want {
		backends, bad := p.backends(r, used)
		errs = append(errs, bad...)

		// A port that changes protocol or app is reopened: its server
		// and its logger belong to the old ones.
		l := p.listeners[port]
		if l != nil && (l.protocol != r.Protocol || l.app != r.App) {
			p.stopListener(l)
			l = nil
		}
		if l == nil {
			l, err := p.startListener(r, backends)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			p.listeners[port] = l
			continue
		}
		l.pool.set(backends)
	}

	// Close the ports no longer wanted, and the idle connections to
	// backends no route uses any more.
	for port, l := range p.listeners {
		if _, ok := want[port]; !ok {
			p.stopListener(l)
		}
	}
	for key, rt := range p.transports {
		if !used[key] {
			rt.CloseIdleConnections()
			delete(p.transports, key)
		}
	}
	return errors.Join(errs...)
}

// checkRoute validates r against the routes already accepted in want.
func checkRoute(r Route, want map[int]Route) error {
	switch {
	case r.Listen <= 0 || r.Listen > 65535:
		return fmt.Errorf("app %q port %q: ingress port %d: %w",
			r.App, r.Port, r.Listen, ErrInvalidRoute)
	case r.Protocol != ProtocolHTTP && r.Protocol != ProtocolTCP:
		return fmt.Errorf("app %q port %q: protocol %q: %w",
			r.App, r.Port, r.Protocol, ErrInvalidRoute)
	}
	if other, ok := want[r.Listen]; ok {
		return fmt.Errorf("app %q port %q: ingress port %d already used by app %q: %w",
			r.App, r.Port, r.Listen, other.App, ErrInvalidRoute)
	}
	return nil
}

// backends builds the backend set of r, with a transport per HTTP backend
// marked in used. A backend with a bad address is left out and reported.
func (p *Proxy) backends(r Route, used map[string]bool) ([]*backend, []error) {
	var errs []error
	out := make([]*backend, 0, len(r.Backends))
	for _, b := range r.Backends {
		if _, _, err := net.SplitHostPort(b.Addr); err != nil {
			errs = append(errs, fmt.Errorf("app %q task %q: address %q: %w",
				r.App, b.TaskID, b.Addr, ErrInvalidRoute))
			continue
		}
		be := &backend{Backend: b}
		if r.Protocol == ProtocolHTTP {
			key := b.TaskID + "|" + b.Addr
			be.rt = p.transport(key)
			used[key] = true
		}
		out = append(out, be)
	}
	return out, errs
}

// transport returns the HTTP transport of one backend, creating it. Each
// backend has its own so that the idle connections of a removed backend
// can be closed without touching the others.
func (p *Proxy) transport(key string) *http.Transport {
	if rt, ok := p.transports[key]; ok {
		return rt
	}
	rt := &http.Transport{
		DialContext:         p.dialer.DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		// A proxy passes the client's encoding through untouched.
		DisableCompression: true,
	}
	p.transports[key] = rt
	return rt
}

// startListener opens the ingress port of r and starts serving it.
func (p *Proxy) startListener(r Route, backends []*backend) (*listener, error) {
	addr := net.JoinHostPort(p.cfg.BindAddr, strconv.Itoa(r.Listen))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("app %q: ingress port %d: %w: %w",
			r.App, r.Listen, ErrListen, err)
	}

	l := &listener{
		port:     r.Listen,
		protocol: r.Protocol,
		app:      r.App,
		ln:       ln,
		pool:     newPool(p.active),
		log: p.log.With("app", r.App, "port", r.Port,
			"ingress", r.Listen),
	}
	l.pool.set(backends)

	p.wg.Add(1)
	if r.Protocol == ProtocolHTTP {
		p.serveHTTP(l)
	} else {
		go p.serveTCP(l)
	}
	l.log.Info("ingress port opened", "protocol", r.Protocol)
	return l, nil
}

// stopListener closes the port of l at once; what it already accepted
// finishes in the background. The caller holds p.mu.
func (p *Proxy) stopListener(l *listener) {
	delete(p.listeners, l.port)
	if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		l.log.Warn("closing ingress port", "error", err)
	}
	if l.srv != nil {
		p.wg.Add(1)
		go p.shutdownHTTP(l)
	}
	l.log.Info("ingress port closed")
}

// Close closes every ingress port and every proxied connection, and waits
// for the accept loops and TCP connections to end; an HTTP request still
// in its handler sees its connections closed and ends on its own. Close is
// idempotent and always returns nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, l := range p.listeners {
		// The servers are closed with the others below.
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.log.Warn("closing ingress port", "error", err)
		}
		delete(p.listeners, l.port)
	}
	p.cancel()

	p.connsMu.Lock()
	p.connsClosed = true
	for c := range p.conns {
		c.Close()
	}
	for srv := range p.servers {
		srv.Close()
	}
	p.connsMu.Unlock()

	for _, rt := range p.transports {
		rt.CloseIdleConnections()
	}
	p.mu.Unlock()

	p.wg.Wait()
	return nil
}

// track registers a connection for Close; false means the proxy is
// closing and c must be dropped.
func (p *Proxy) track(c net.Conn) bool {
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	if p.connsClosed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.connsMu.Lock()
	delete(p.conns, c)
	p.connsMu.Unlock()
}
