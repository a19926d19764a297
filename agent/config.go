package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/agent/runtime"
)

// Default ports and settings of a worker.
const (
	DefaultGossipPort     = 7073
	DefaultDNSPort        = 7053
	DefaultManagerRPCPort = 7071
	DefaultReportInterval = 5 * time.Second
)

// Config configures an Agent. Start from DefaultConfig.
type Config struct {
	// Name is the node's name, unique in the cluster. Default: the host name.
	Name string

	// DataDir holds the agent's files; container logs go to DataDir/logs.
	DataDir string

	// BindAddr is the IP the worker listens on and advertises; tasks get it
	// as HIVEMIND_IP. Default 127.0.0.1.
	BindAddr string

	// GossipPort is the SWIM port (TCP and UDP). Default 7073.
	GossipPort int

	// DNSPort is the port of the worker's DNS server (UDP and TCP, on
	// BindAddr). Default 7053; 0 picks a free port, which the worker
	// advertises in gossip and Register.
	DNSPort int

	// Join lists manager addresses, "ip" or "ip:port" of their gRPC port
	// (port default 7071). At least one is required.
	Join []string

	// Token is the worker join token presented to Register.
	Token string

	// Runtime runs the containers. Nil: the agent connects to containerd at
	// ContainerdSocket in ContainerdNamespace and closes it when Run returns.
	// A Runtime passed in is not closed by the agent.
	Runtime runtime.Runtime

	// ContainerdSocket and ContainerdNamespace are used when Runtime is nil.
	// Defaults: runtime.DefaultConfig's (/run/containerd/containerd.sock
	// and "hivemind").
	ContainerdSocket    string
	ContainerdNamespace string

	// InsecureRegistries are registries pulled from over plain HTTP.
	InsecureRegistries []string

	// Logger receives the agent's logs. Default: hclog.Default().
	Logger hclog.Logger

	// ReportInterval is how often every task's state is sent again in
	// full, so that a new leader learns the truth. Default 5s.
	ReportInterval time.Duration
}

// DefaultConfig returns a Config with every default filled in; Join must
// still be set.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil {
		name = ""
	}
	rt := runtime.DefaultConfig()
	return Config{
		Name:                name,
		DataDir:             "/var/lib/hivemind",
		BindAddr:            "127.0.0.1",
		GossipPort:          DefaultGossipPort,
		DNSPort:             DefaultDNSPort,
		ContainerdSocket:    rt.Socket,
		ContainerdNamespace: rt.Namespace,
		ReportInterval:      DefaultReportInterval,
	}
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid agent config")

// Validate reports the first field of c that is missing or out of range.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "":
		return bad("name is required")
	case c.DataDir == "":
		return bad("data dir is required")
	case net.ParseIP(c.BindAddr) == nil:
		return bad("bind address %q is not an IP", c.BindAddr)
	case c.GossipPort < 0 || c.GossipPort > 65535:
		return bad("gossip port %d out of range", c.GossipPort)
	case c.DNSPort < 0 || c.DNSPort > 65535:
		return bad("dns port %d out of range", c.DNSPort)
	case len(c.Join) == 0:
		return bad("at least one manager address to join is required")
	case c.ReportInterval <= 0:
		return bad("report interval must be positive")
	case c.Runtime == nil && c.ContainerdSocket == "":
		return bad("containerd socket is required without a runtime")
	case c.Runtime == nil && c.ContainerdNamespace == "":
		return bad("containerd namespace is required without a runtime")
	}
	for _, j := range c.Join {
		if _, err := withDefaultPort(j, DefaultManagerRPCPort); err != nil {
			return bad("join address %q: %v", j, err)
		}
	}
	return nil
}

// withDefaultPort turns "ip" or "ip:port" into "ip:port".
func withDefaultPort(addr string, port int) (string, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the whole string must be a host.
		host, p = addr, strconv.Itoa(port)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		return "", errors.New("missing host")
	}
	return net.JoinHostPort(host, p), nil
}
