package dns

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// bindAttempts bounds the retries when port 0 gave UDP a port that is
// taken for TCP.
const bindAttempts = 10

// Server answers DNS queries for the apps of its table on one UDP and
// one TCP socket. Create it with New, then Start it; Update may be
// called at any time, before or after Start. The zero value is not
// usable.
type Server struct {
	cfg  Config
	zone string // the domain, lower case, fully qualified
	log  hclog.Logger

	table  atomic.Pointer[table]
	serial atomic.Uint32 // counts Updates, for the SOA
	next   atomic.Uint64 // round-robin offset of answers

	mu        sync.Mutex // guards the fields below
	started   bool
	closed    bool
	udp       *dns.Server
	tcp       *dns.Server
	boundAddr string
	wg        sync.WaitGroup // the two serve goroutines
}

// New validates cfg and returns a server with an empty table, not yet
// listening. Zero Domain and TTL take their defaults.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	s := &Server{
		cfg:  cfg,
		zone: dns.CanonicalName(cfg.Domain),
		log:  cfg.Logger.Named("dns"),
	}
	s.table.Store(buildTable(nil, 0, s.log))
	return s, nil
}

// Update replaces the whole table with apps: app name -> its healthy,
// non-draining endpoints. An app present with no endpoint answers
// NODATA; an app absent answers NXDOMAIN. Queries see either the old
// table or the new one, never a mix. Update keeps no reference to
// apps. Entries that cannot be put in DNS (a bad IP, a task ID or app
// name that is not a DNS label) are skipped and logged.
func (s *Server) Update(apps map[string][]Endpoint) {
	serial := s.serial.Add(1)
	s.table.Store(buildTable(apps, serial, s.log))
	s.log.Debug("table updated", "apps", len(apps), "serial", serial)
}

// Start binds the UDP and TCP sockets on the same port and serves
// them in the background. It returns once both are bound and
// serving, or an error; ErrStarted if called twice and ErrClosed
// after Close.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return ErrStarted
	}

	pc, ln, err := s.listen()
	if err != nil {
		return err
	}
	s.boundAddr = pc.LocalAddr().String()

	// Serve, and wait until both servers run: a Shutdown before that
	// would be lost (the library refuses to stop an unstarted server).
	handler := dns.HandlerFunc(s.serveDNS)
	ready := make(chan struct{}, 2)
	notify := func() { ready <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: handler,
		NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: handler,
		NotifyStartedFunc: notify}
	failed := make(chan error, 2)
	s.serve(s.udp, "udp", failed)
	s.serve(s.tcp, "tcp", failed)
	for range 2 {
		select {
		case <-ready:
		case err := <-failed:
			s.shutdown()
			return fmt.Errorf("dns server on %s: %w", s.boundAddr, err)
		}
	}

	s.started = true
	s.log.Info("serving", "addr", s.boundAddr, "domain", s.cfg.Domain)
	return nil
}

// serve runs srv until it is shut down. An error before it started is
// sent on failed; one after is logged, and queries on the other
// transport keep being answered.
func (s *Server) serve(srv *dns.Server, network string,
	failed chan<- error) {

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.ActivateAndServe(); err != nil {
			failed <- err
			s.log.Error("stopped serving", "net", network,
				"error", err)
		}
	}()
}

// listen binds UDP, then TCP on the port UDP got. With Port 0 the
// kernel picks the UDP port, which TCP may find taken; then it tries
// again with another.
func (s *Server) listen() (net.PacketConn, net.Listener, error) {
	host := s.cfg.BindAddr
	for attempt := 1; ; attempt++ {
		addr := net.JoinHostPort(host, strconv.Itoa(s.cfg.Port))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns listen udp %s: %w",
				addr, err)
		}

		addr = pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if s.cfg.Port != 0 || attempt == bindAttempts ||
			!errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("dns listen tcp %s: %w",
				addr, err)
		}
	}
}

// serveDNS is the handler of both transports.
func (s *Server) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if err := w.WriteMsg(s.answer(r, tcp)); err != nil {
		s.log.Debug("write reply", "remote", w.RemoteAddr(),
			"error", err)
	}
}

// Addr returns the UDP address the server listens on (the TCP port is
// the same), or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boundAddr
}

// Close stops serving and waits for the serve goroutines to end. It
// is idempotent and may be called before Start.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		return nil
	}
	s.shutdown()
	s.log.Info("stopped", "addr", s.boundAddr)
	return nil
}

// shutdown stops both servers and waits for them. A server that never
// started has its socket closed instead, which ends its goroutine.
func (s *Server) shutdown() {
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv.Shutdown() != nil {
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				srv.Listener.Close()
			}
		}
	}
	s.wg.Wait()
}
