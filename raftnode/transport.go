package raftnode

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	// transportMaxPool is the number of idle connections kept per peer.
	transportMaxPool = 3
	// transportTimeout bounds a single Raft RPC's I/O; snapshots
	// scale it by size inside raft.
	transportTimeout = 10 * time.Second
)

// tcpStreamLayer is raft's StreamLayer over plain TCP. It is ours rather
// than raft.NewTCPTransport's so that TLS can wrap it (or replace it,
// through Config.StreamLayer) without touching the transport setup.
type tcpStreamLayer struct {
	net.Listener
}

// NewTCPStreamLayer listens on bindAddr:port (port 0 picks a free one)
// and dials peers over plain TCP. Its Addr is the bound address, which
// is what the node advertises.
func NewTCPStreamLayer(bindAddr string, port int) (raft.StreamLayer, error) {
	addr := net.JoinHostPort(bindAddr, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", addr, err)
	}
	return &tcpStreamLayer{Listener: l}, nil
}

// Dial implements raft.StreamLayer.
func (t *tcpStreamLayer) Dial(addr raft.ServerAddress,
	timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", string(addr))
}

// newNetworkTransport builds raft's network transport over stream.
func newNetworkTransport(stream raft.StreamLayer,
	log hclog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: transportMaxPool,
		Timeout: transportTimeout,
		Logger:  log.Named("transport"),
	})
}
