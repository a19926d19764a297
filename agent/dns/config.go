package dns

import (
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// Defaults for the fields of Config.
const (
	DefaultPort   = 7053
	DefaultDomain = "hivemind"
	DefaultTTL    = 1
)

var (
	// ErrInvalidConfig is wrapped by the errors of Config.Validate.
	ErrInvalidConfig = errors.New("invalid dns config")
	// ErrStarted is returned by Start on a server already started.
	ErrStarted = errors.New("dns server already started")
	// ErrClosed is returned by Start on a closed server.
	ErrClosed = errors.New("dns server closed")
)

// Config configures a Server.
type Config struct {
	// BindAddr is the IP address to listen on, normally the worker's
	// bind address. Required.
	BindAddr string

	// Port is the UDP and TCP port. 0 picks a free port (see
	// Server.Addr); DefaultConfig sets DefaultPort.
	Port int

	// Domain is the zone answered for, without a trailing dot.
	// Empty means DefaultDomain.
	Domain string

	// TTL of every record, in seconds. It is small because the
	// endpoint set changes during rollouts. 0 means DefaultTTL.
	TTL uint32

	// Logger is the parent logger; the server logs to its "dns"
	// sub-logger. Nil means no logging.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with the default port, domain and TTL
// and no BindAddr.
func DefaultConfig() Config {
	return Config{Port: DefaultPort, Domain: DefaultDomain, TTL: DefaultTTL}
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig.
// Zero Domain and TTL are valid: New replaces them with the defaults.
func (c Config) Validate() error {
	if net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("%w: bind address %q is not an IP address",
			ErrInvalidConfig, c.BindAddr)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("%w: port %d out of range",
			ErrInvalidConfig, c.Port)
	}
	if c.Domain != "" {
		if _, ok := dns.IsDomainName(c.Domain); !ok {
			return fmt.Errorf("%w: domain %q is not a domain name",
				ErrInvalidConfig, c.Domain)
		}
	}
	return nil
}

// withDefaults fills the zero fields that have a default.
func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}
