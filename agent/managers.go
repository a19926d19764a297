package agent

import (
	"net"
	"strconv"
	"sync"

	"google.golang.org/grpc"

	"github.com/hivemind-orch/hivemind/rpc"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// managers is the agent's list of manager gRPC addresses and one client
// connection per address. The watcher, the reporter and registration share
// it; each rotates to the next address when the current one fails.
type managers struct {
	mu    sync.Mutex
	addrs []string // "ip:port" of gRPC ports
	next  int
	conns map[string]*grpc.ClientConn
	opts  []grpc.DialOption
}

func newManagers(addrs []string, opts []grpc.DialOption) *managers {
	return &managers{
		addrs: append([]string(nil), addrs...),
		conns: make(map[string]*grpc.ClientConn),
		opts:  opts,
	}
}

// dialOptions are the options of every connection to a manager: those
// of rpc.Dial, so a worker retries a restarted manager as quickly as the
// managers retry each other, and gets the cluster's TLS from one place.
func dialOptions() []grpc.DialOption {
	return rpc.DialOptions()
}

// set replaces the address list, keeping the current address first if it
// is still listed. An empty list is ignored: knowing stale managers is
// better than knowing none.
func (m *managers) set(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	cur := ""
	if len(m.addrs) > 0 {
		cur = m.addrs[m.next%len(m.addrs)]
	}
	m.addrs = append([]string(nil), addrs...)
	m.next = 0
	for i, a := range m.addrs {
		if a == cur {
			m.next = i
		}
	}
}

// order returns every address, starting with the current one.
func (m *managers) order() []string {
	m.mu.Lock()
	defer m.mu.Unlock()

	out := make([]string, 0, len(m.addrs))
	for i := range m.addrs {
		out = append(out, m.addrs[(m.next+i)%len(m.addrs)])
	}
	return out
}

// failed moves past addr if it is still the current address.
func (m *managers) failed(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()

	if len(m.addrs) > 0 && m.addrs[m.next%len(m.addrs)] == addr {
		m.next = (m.next + 1) % len(m.addrs)
	}
}

// succeeded makes addr the current address.
func (m *managers) succeeded(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()

	for i, a := range m.addrs {
		if a == addr {
			m.next = i
		}
	}
}

// client returns a Worker client for addr. Connections are made lazily by
// gRPC and kept until close.
func (m *managers) client(addr string) (pb.WorkerClient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()

	if c, ok := m.conns[addr]; ok {
		return pb.NewWorkerClient(c), nil
	}
	c, err := grpc.NewClient(addr, m.opts...)
	if err != nil {
		return nil, err
	}
	m.conns[addr] = c
	return pb.NewWorkerClient(c), nil
}

// close closes every connection.
func (m *managers) close() {
	m.mu.Lock()
	defer m.mu.Unlock()

	for a, c := range m.conns {
		_ = c.Close() // nothing to do about a failed close on shutdown
		delete(m.conns, a)
	}
}

// rpcAddrs and gossipAddrs turn a Register response into addresses.
func rpcAddrs(ms []*pb.ManagerAddress) []string {
	var out []string
	for _, m := range ms {
		if m.GetAddress() != "" && m.GetRpcPort() > 0 {
			port := strconv.Itoa(int(m.GetRpcPort()))
			out = append(out, net.JoinHostPort(m.GetAddress(), port))
		}
	}
	return out
}

func gossipAddrs(ms []*pb.ManagerAddress) []string {
	var out []string
	for _, m := range ms {
		if m.GetAddress() != "" && m.GetGossipPort() > 0 {
			port := strconv.Itoa(int(m.GetGossipPort()))
			out = append(out, net.JoinHostPort(m.GetAddress(), port))
		}
	}
	return out
}
