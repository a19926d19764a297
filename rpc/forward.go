package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// forwardedKey marks a request a follower forwarded, so that a manager
// that is not the leader either (leadership moved meanwhile) answers
// "no leader" instead of forwarding it again.
const forwardedKey = "x-hivemind-forwarded-by"

// leaderOnly lists the methods that must run on the leader, each with a
// constructor for its response so the forwarder can invoke it on the
// leader without a typed client per method. Control.ClusterStatus,
// Worker.Assignments and Worker.Endpoints are absent on purpose: any
// manager answers them.
var leaderOnly = map[string]func() proto.Message{
	pb.Control_JoinToken_FullMethodName:    func() proto.Message { return new(pb.JoinTokenResponse) },
	pb.Control_ListNodes_FullMethodName:    func() proto.Message { return new(pb.ListNodesResponse) },
	pb.Control_DeployApp_FullMethodName:    func() proto.Message { return new(pb.DeployAppResponse) },
	pb.Control_ListApps_FullMethodName:     func() proto.Message { return new(pb.ListAppsResponse) },
	pb.Control_AppStatus_FullMethodName:    func() proto.Message { return new(pb.AppStatusResponse) },
	pb.Control_ScaleApp_FullMethodName:     func() proto.Message { return new(pb.ScaleAppResponse) },
	pb.Control_RemoveApp_FullMethodName:    func() proto.Message { return new(pb.RemoveAppResponse) },
	pb.Control_RollbackApp_FullMethodName:  func() proto.Message { return new(pb.RollbackAppResponse) },
	pb.Control_DrainNode_FullMethodName:    func() proto.Message { return new(pb.DrainNodeResponse) },
	pb.Control_ActivateNode_FullMethodName: func() proto.Message { return new(pb.ActivateNodeResponse) },
	pb.Worker_Register_FullMethodName:      func() proto.Message { return new(pb.RegisterResponse) },
	pb.Worker_Report_FullMethodName:        func() proto.Message { return new(pb.ReportResponse) },

	// Raft membership changes are the leader's to make.
	pb.Control_RemovePeer_FullMethodName:         func() proto.Message { return new(pb.RemovePeerResponse) },
	pb.Control_TransferLeadership_FullMethodName: func() proto.Message { return new(pb.TransferLeadershipResponse) },
}

// forwardUnary runs leader-only methods on the leader and forwards them
// to the leader from a follower. The caller's deadline travels with the
// context; the leader's status comes back unchanged.
//
// On the leader a method runs only after consistentRead, so that what it
// reads from the store is linearizable: a leader that a partition has
// deposed without its knowing, or one elected a moment ago that has not
// applied the previous term's entries, answers Unavailable instead of
// stale data. A leader that finds another has replaced it forwards the
// call there instead, unless the call was forwarded already.
func (s *Server) forwardUnary(ctx context.Context, req any,
	info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {

	newResp, ok := leaderOnly[info.FullMethod]
	if !ok {
		return handler(ctx, req)
	}
	if s.cfg.Raft.IsLeader() {
		err := s.consistentRead(ctx)
		if err == nil {
			return handler(ctx, req)
		}
		if !s.canForward(ctx) {
			return nil, toStatus(fmt.Errorf("%s: %w", path.Base(info.FullMethod), err))
		}
		s.log.Debug("consistent read failed, forwarding", "method", info.FullMethod, "error", err)
	}
	if by := forwardedBy(ctx); by != "" {
		err := fmt.Errorf("%w: %s forwarded by %q reached follower %q",
			ErrNoLeader, info.FullMethod, by, s.cfg.Name)
		return nil, toStatus(err)
	}

	leader, cc, err := s.leaderConn()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := newResp()
	out, cancel := context.WithCancelCause(
		metadata.AppendToOutgoingContext(ctx, forwardedKey, s.cfg.Name))
	defer cancel(nil)
	go s.cancelOnNewLeader(out, leader, cancel)
	if err := cc.Invoke(out, info.FullMethod, req, resp); err != nil {
		if cause := context.Cause(out); errors.Is(cause, errLeaderMoved) {
			err = toStatus(fmt.Errorf("%s: %w", path.Base(info.FullMethod), cause))
		}
		s.log.Debug("forwarded call failed", "method", info.FullMethod, "error", err)
		return nil, err
	}
	return resp, nil
}

// errLeaderMoved ends a forwarded call whose leader was replaced while it
// ran: a leader cut off from the others would otherwise hold it until
// the caller's deadline.
var errLeaderMoved = fmt.Errorf("%w: leadership moved while the call was forwarded, "+
	"so it may or may not have taken effect", ErrNoLeader)

// forwardWatch is how often a forwarded call's manager looks for a new
// leader.
const forwardWatch = 100 * time.Millisecond

// cancelOnNewLeader cancels ctx once this manager knows a leader other
// than leader, and returns when ctx ends.
func (s *Server) cancelOnNewLeader(ctx context.Context, leader string,
	cancel context.CancelCauseFunc) {
	t := time.NewTicker(forwardWatch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now, _ := s.cfg.Raft.Leader(); now != "" && now != leader {
			cancel(fmt.Errorf("%w (from %q to %q)", errLeaderMoved, leader, now))
			return
		}
	}
}

// canForward reports whether a call this manager cannot answer as leader
// may go to another leader: it was not forwarded here, and this manager
// knows a leader other than itself.
func (s *Server) canForward(ctx context.Context) bool {
	if forwardedBy(ctx) != "" || s.cfg.Raft.IsLeader() {
		return false
	}
	name, _ := s.cfg.Raft.Leader()
	return name != "" && name != s.cfg.Name
}

func forwardedBy(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(forwardedKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// leaderConn returns a client connection to the leader's gRPC address.
func (s *Server) leaderConn() (string, *grpc.ClientConn, error) {
	name, _ := s.cfg.Raft.Leader()
	if name == "" {
		return "", nil, ErrNoLeader
	}
	addr, err := s.managerRPCAddr(name)
	if err != nil {
		return "", nil, fmt.Errorf("%w: leader %q: %w", ErrNoLeader, name, err)
	}
	cc, err := s.conns.get(addr)
	return name, cc, err
}

// errNoRPCAddr means a manager's gRPC address is neither in the store
// nor known to Config.PeerRPCAddr.
var errNoRPCAddr = errors.New("no rpc address known")

// managerRPCAddr looks a manager's gRPC address up in the local store,
// then asks Config.PeerRPCAddr: a freshly elected leader's node may not
// be in the store yet.
func (s *Server) managerRPCAddr(name string) (string, error) {
	n := s.store.Node(name)
	if n != nil && n.GetRole() == pb.RoleManager &&
		n.GetAddress() != "" && n.GetRpcPort() != 0 {
		port := strconv.Itoa(int(n.GetRpcPort()))
		return net.JoinHostPort(n.GetAddress(), port), nil
	}
	if s.cfg.PeerRPCAddr != nil {
		if addr, ok := s.cfg.PeerRPCAddr(name); ok {
			return addr, nil
		}
	}
	return "", errNoRPCAddr
}

// connCache keeps one lazily connecting client per address: to the
// leader for forwarding and to peers for ClusterStatus.
type connCache struct {
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newConnCache(opts []grpc.DialOption) *connCache {
	return &connCache{opts: opts, conns: make(map[string]*grpc.ClientConn)}
}

func (c *connCache) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%w: server is shutting down", ErrNoLeader)
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}

	// grpc.NewClient does not connect; the first call does, and
	// reconnects with backoff after a failure, so caching is safe.
	cc, err := dial(addr, c.opts)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *connCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for addr, cc := range c.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close conn to %s: %w", addr, err))
		}
	}
	c.conns = nil
	return errors.Join(errs...)
}
