package rpc

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Raft is the part of the Raft node the servers use. *raftnode.Node
// implements it; tests use a fake.
type Raft interface {
	// IsLeader reports whether this manager is the leader now.
	IsLeader() bool
	// Leader returns the leader's name and Raft address, "" if unknown.
	Leader() (name, raftAddr string)
	// Stats returns this manager's own view of Raft.
	Stats() *pb.ManagerStatus
	// Servers returns the Raft configuration.
	Servers() ([]raftnode.Server, error)
	// Propose encodes a command, commits it and returns once the local
	// FSM has applied it; the error is Raft's or the one Apply returned.
	Propose(ctx context.Context, t fsm.CommandType, msg proto.Message) (uint64, error)
}

// *raftnode.Node is what a manager passes as Config.Raft.
var _ Raft = (*raftnode.Node)(nil)

// Config configures a Server. Name, Store (or FSM), Raft, RPCAddr and
// HTTPAddr are required; the rest have defaults.
type Config struct {
	// Name is this manager's node name, as in Raft and the store.
	Name string
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// Store is the local replica the servers read. Defaults to FSM.State().
	Store *fsm.Store
	// FSM writes the SQLite snapshot for GET /v1/snapshot.
	FSM *fsm.FSM
	// Raft proposes commands and tells who leads.
	Raft Raft
	// Now stamps commands (the leader's clock). Defaults to time.Now.
	Now func() time.Time
	// NewID makes deployment IDs. Defaults to a random UUID.
	NewID func() string
	// PeerRPCAddr, when set, resolves a manager's gRPC "ip:port" by
	// name when the store has no address for it yet, as right after an
	// election, before the new leader has recorded its own node. Nil:
	// only the store is consulted.
	PeerRPCAddr func(name string) (string, bool)
	// Engine, when set, reports this manager's rollout engine; its
	// values fill engine_enabled, engine_steps and engine_proposals of
	// the manager's own status (cluster status, RaftStats). Nil: they
	// stay zero.
	Engine func() deploy.Stats

	// RPCAddr and HTTPAddr are the ip:port to listen on; port 0 picks
	// a free one (see Server.RPCAddr and Server.HTTPAddr).
	RPCAddr, HTTPAddr string

	// ServerOptions are added to the gRPC server's options (TLS
	// credentials go here).
	ServerOptions []grpc.ServerOption
	// DialOptions are added after the defaults of Dial to every client
	// connection the server makes (to the leader, to peers and from the
	// gateway); transport credentials given here replace the insecure
	// default.
	DialOptions []grpc.DialOption
	// HTTPTLS, when set, makes the HTTP server speak TLS.
	HTTPTLS *tls.Config
}

// Validate checks the required fields.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("rpc config: name is required")
	case c.Store == nil && c.FSM == nil:
		return errors.New("rpc config: store or fsm is required")
	case c.Raft == nil:
		return errors.New("rpc config: raft is required")
	case c.RPCAddr == "":
		return errors.New("rpc config: rpc address is required")
	case c.HTTPAddr == "":
		return errors.New("rpc config: http address is required")
	}
	return nil
}

// Server serves the gRPC services and the HTTP gateway of one manager.
// Create it with New, then Start it; Shutdown stops it.
type Server struct {
	cfg    Config
	log    hclog.Logger
	store  *fsm.Store
	grpc   *grpc.Server
	conns  *connCache
	dialOp []grpc.DialOption

	// done is closed by Shutdown; long-lived streams watch it so that
	// GracefulStop does not wait on them.
	done chan struct{}

	// restoreMu runs one snapshot restore at a time on this leader: a
	// restore and the entry with its epoch go together, and Raft fails
	// a restore that overlaps another's.
	restoreMu sync.Mutex

	mu        sync.Mutex
	started   bool
	rpcLis    net.Listener
	httpLis   net.Listener
	http      *http.Server
	gwCancel  context.CancelFunc
	wg        sync.WaitGroup
	shutdown  bool
	shutdownE error
}

// New builds a Server and registers its services. It does not listen.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Store == nil {
		cfg.Store = cfg.FSM.State()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = NewUUID
	}

	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.Named("rpc"),
		store:  cfg.Store,
		dialOp: DialOptions(cfg.DialOptions...),
		done:   make(chan struct{}),
	}
	s.conns = newConnCache(s.dialOp)

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.forwardUnary),
		grpc.ChainStreamInterceptor(s.recoverStream),
	}
	opts = append(opts, cfg.ServerOptions...)
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterControlServer(s.grpc, &controlServer{s: s})
	pb.RegisterWorkerServer(s.grpc, &workerServer{s: s})
	pb.RegisterPeerServer(s.grpc, &peerServer{s: s})
	return s, nil
}

// Start listens on the gRPC and HTTP addresses and serves in the
// background. It returns once both listeners are open.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.shutdown {
		return errors.New("rpc server: already started")
	}

	rpcLis, err := net.Listen("tcp", s.cfg.RPCAddr)
	if err != nil {
		return fmt.Errorf("rpc server: listen on %s: %w", s.cfg.RPCAddr, err)
	}
	httpLis, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		rpcLis.Close()
		return fmt.Errorf("rpc server: listen on %s: %w", s.cfg.HTTPAddr, err)
	}
	if s.cfg.HTTPTLS != nil {
		httpLis = tls.NewListener(httpLis, s.cfg.HTTPTLS)
	}

	// The gateway calls our own gRPC port so that forwarding, recovery
	// and any future auth apply to HTTP requests exactly as to gRPC.
	gwCtx, gwCancel := context.WithCancel(context.Background())
	handler, err := s.gateway(gwCtx, dialTarget(rpcLis.Addr()))
	if err != nil {
		gwCancel()
		rpcLis.Close()
		httpLis.Close()
		return err
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.rpcLis, s.httpLis, s.gwCancel = rpcLis, httpLis, gwCancel
	s.started = true

	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(rpcLis); err != nil {
			s.log.Error("grpc server stopped", "error", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		err := s.http.Serve(httpLis)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "error", err)
		}
	}()
	s.log.Info("serving", "rpc", rpcLis.Addr().String(), "http", httpLis.Addr().String())
	return nil
}

// RPCAddr returns the address the gRPC server listens on, or "" before
// Start.
func (s *Server) RPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rpcLis == nil {
		return ""
	}
	return s.rpcLis.Addr().String()
}

// HTTPAddr returns the address the HTTP server listens on, or "" before
// Start.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// Shutdown ends open streams, stops both servers gracefully until ctx is
// done and then hard, and closes client connections. It is idempotent and
// safe to call without Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return s.shutdownE
	}
	s.shutdown = true
	close(s.done)
	started := s.started
	s.mu.Unlock()

	var errs []error
	if started {
		errs = append(errs, s.stopServers(ctx))
	} else {
		s.grpc.Stop()
	}
	errs = append(errs, s.conns.close())

	err := errors.Join(errs...)
	s.mu.Lock()
	s.shutdownE = err
	s.mu.Unlock()
	return err
}

// stopServers stops HTTP first (its requests go through gRPC), then gRPC.
func (s *Server) stopServers(ctx context.Context) error {
	var errs []error
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("rpc server: http shutdown: %w", err))
		s.http.Close()
	}
	s.gwCancel()

	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		errs = append(errs, fmt.Errorf("rpc server: grpc shutdown: %w", ctx.Err()))
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Dial opens a client connection to a manager's gRPC address (ip:port).
// It is the one place where client dial options are built.
//
// TODO: transport security is insecure until the cluster CA exists; TLS
// credentials will be added here and through Config.DialOptions.
func Dial(addr string) (*grpc.ClientConn, error) {
	return dial(addr, DialOptions())
}

// MaxMsgSize is the largest gRPC message a manager or a client of one
// receives. gRPC's default of 4 MiB is too small for the answers that
// carry whole state (every app, every task) in a large cluster; sending
// is unlimited by default.
//
// TODO: every Task carries a copy of its version's spec, so an app
// status answer, a worker's assignment list and a plan entry grow with
// env size times tasks, and pass this limit at, for example, 1 MiB of
// env and 64 tasks on one worker; sending each spec once per app
// version, and tasks referring to it, would bound them by the specs.
const MaxMsgSize = 64 << 20

// reconnect is how a client connection retries a manager it lost. gRPC's
// default backoff grows to 120s, so a manager that restarted would look
// unreachable long after it serves again; between managers on one LAN a
// retry a second is cheap.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: backoff.DefaultConfig.Multiplier,
		Jitter:     backoff.DefaultConfig.Jitter,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: time.Second,
}

// DialOptions returns the options of Dial followed by extra: those of
// every client connection to a manager, from a manager or a worker.
func DialOptions(extra ...grpc.DialOption) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(reconnect),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize)),
	}
	return append(opts, extra...)
}

func dial(addr string, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// dialTarget turns a listener address into one a client can dial: an
// unspecified IP (0.0.0.0, ::) becomes loopback.
func dialTarget(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	ip := net.IPv4(127, 0, 0, 1)
	if tcp.IP.To4() == nil {
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// NewUUID returns a random version 4 UUID.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand.Read does not fail on supported platforms.
		panic(fmt.Sprintf("rpc: read random bytes: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
