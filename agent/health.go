package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Health check timings used when a spec leaves them zero.
const (
	defaultCheckInterval = 10 * time.Second
	defaultCheckTimeout  = 5 * time.Second

	// startupCheckInterval is the pace of checks before a task's first
	// pass, for at most startupCheckWindow (or its start period, if
	// longer) after it started. A server is usually listening a few
	// milliseconds after its container starts; waiting a whole interval
	// after the first, too early check would hold up every batch of a
	// rollout by up to that interval.
	startupCheckInterval = 100 * time.Millisecond
	startupCheckWindow   = 10 * time.Second
)

// errNoPort means a check names a port the task was not given.
var errNoPort = errors.New("no such port")

// checker runs one task's HTTP or TCP health check.
type checker struct {
	kind        string // "http" or "tcp"
	addr        string // ip:port, empty if the port is unknown
	port        string // the port name, for messages
	path        string
	interval    time.Duration
	timeout     time.Duration
	startPeriod time.Duration
	started     time.Time
	client      *http.Client
}

// newChecker builds the checker of t's health spec hs, which must have an
// HTTP or a TCP check. Checks go to the task's address, or to bindAddr if
// the task has none.
func newChecker(t *pb.Task, hs *pb.HealthSpec, bindAddr string,
	started time.Time) *checker {
	c := &checker{
		interval:    time.Duration(hs.GetInterval()),
		timeout:     time.Duration(hs.GetTimeout()),
		startPeriod: time.Duration(hs.GetStartPeriod()),
		started:     started,
	}
	if c.interval <= 0 {
		c.interval = defaultCheckInterval
	}
	if c.timeout <= 0 {
		c.timeout = min(defaultCheckTimeout, c.interval)
	}
	if h := hs.GetHttp(); h != nil {
		c.kind, c.port, c.path = pb.ProtocolHTTP, h.GetPort(), h.GetPath()
		if c.path == "" {
			c.path = "/"
		}
		c.client = &http.Client{
			Timeout: c.timeout,
			// A redirect answers the check; following it could leave
			// the task.
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	} else {
		c.kind, c.port = pb.ProtocolTCP, hs.GetTcp().GetPort()
	}

	ip := t.GetAddress()
	if ip == "" {
		ip = bindAddr
	}
	if p, ok := t.GetPorts()[c.port]; ok && p > 0 {
		c.addr = net.JoinHostPort(ip, strconv.Itoa(int(p)))
	}
	return c
}

// run checks at once and then every interval until ctx is done, passing
// each outcome to report. A task is healthy after a check passes and
// unhealthy after one fails. Until the first pass, failures inside the
// start period carry no message: the task is still starting, and checks
// come faster (see startupCheckInterval).
func (c *checker) run(ctx context.Context,
	report func(healthy bool, msg string)) {
	passed := false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}

		err := c.check(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			passed = true
			report(true, "")
		case !passed && time.Since(c.started) < c.startPeriod:
			report(false, "")
		default:
			report(false, "health check: "+err.Error())
		}
		t.Reset(c.next(passed))
	}
}

// next returns the wait before the next check.
func (c *checker) next(passed bool) time.Duration {
	window := max(startupCheckWindow, c.startPeriod)
	if !passed && time.Since(c.started) < window {
		return min(c.interval, startupCheckInterval)
	}
	return c.interval
}

// check runs the check once.
func (c *checker) check(ctx context.Context) error {
	if c.addr == "" {
		return fmt.Errorf("port %q: %w", c.port, errNoPort)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	if c.kind == pb.ProtocolTCP {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}

	url := "http://" + c.addr + c.path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return nil
}
