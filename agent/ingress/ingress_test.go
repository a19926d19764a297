package ingress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

func TestHTTPRoundRobinKeepAlive(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a, b := newHTTPBackend(t, "a"), newHTTPBackend(t, "b")
	port := freePort(t)
	if err := p.Update([]Route{httpRoute(port, a.backend(), b.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}

	c := newClient(t, true)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		name, err := c.getOK(url(port, "/"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		seen[name]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Errorf("answers = %v, want 5 from a and 5 from b", seen)
	}
	if n := c.dials.Load(); n != 1 {
		t.Errorf("client dialled %d connections, want 1 kept alive", n)
	}

	xff, err := c.getOK(url(port, "/xff"))
	if err != nil {
		t.Fatalf("xff: %v", err)
	}
	if xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", xff)
	}
}

func TestHTTPRemovedBackendGetsNoNewRequest(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a, b := newHTTPBackend(t, "a"), newHTTPBackend(t, "b")
	port := freePort(t)
	if err := p.Update([]Route{httpRoute(port, a.backend(), b.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}

	c := newClient(t, true)
	for i := 0; i < 4; i++ {
		if _, err := c.getOK(url(port, "/")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if b.hits.Load() == 0 {
		t.Fatal("b got no request before it was removed")
	}

	if err := p.Update([]Route{httpRoute(port, a.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}
	before := b.hits.Load()
	for i := 0; i < 20; i++ {
		name, err := c.getOK(url(port, "/"))
		if err != nil {
			t.Fatalf("request %d after removal: %v", i, err)
		}
		if name != "a" {
			t.Fatalf("request %d after removal answered by %q", i, name)
		}
	}
	if got := b.hits.Load(); got != before {
		t.Errorf("b got %d requests after its removal", got-before)
	}
	if n := c.dials.Load(); n != 1 {
		t.Errorf("client dialled %d connections, want the one kept alive", n)
	}
}

func TestHTTPDeadBackendRetried(t *testing.T) {
	p := newProxy(t, hclog.Info)
	a := newHTTPBackend(t, "a")
	dead := Backend{TaskID: "dead", Addr: deadAddr(t)}
	port := freePort(t)
	// The dead backend first, twice, so that every round-robin turn
	// meets it and the retry budget is spent on it.
	route := httpRoute(port, dead, Backend{TaskID: "dead2", Addr: deadAddr(t)}, a.backend())
	if err := p.Update([]Route{route}); err != nil {
		t.Fatalf("update: %v", err)
	}
	c := newClient(t, true)

	tests := []struct {
		name   string
		method string
		body   string
		want   string
	}{
		{name: "get", method: http.MethodGet, want: "a"},
		{name: "post with body", method: http.MethodPost, body: "hello", want: "a:hello"},
		{name: "put with body", method: http.MethodPut, body: "put", want: "a:put"},
		{name: "delete", method: http.MethodDelete, want: "a:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/echo"
			if tc.method == http.MethodGet {
				path = "/"
			}
			for i := 0; i < 30; i++ {
				req, err := http.NewRequest(tc.method, url(port, path),
					strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if body := readAll(resp); resp.StatusCode != http.StatusOK || body != tc.want {
					t.Fatalf("request %d: status %d body %q, want 200 %q",
						i, resp.StatusCode, body, tc.want)
				}
			}
		})
	}
	for _, id := range []string{"a", "dead", "dead2"} {
		if n := p.ActiveConns(id); n != 0 {
			t.Errorf("ActiveConns(%s) = %d after all requests, want 0", id, n)
		}
	}
}

// TestHTTPRetrySafety puts a task that drops every connection after
// reading the request next to a good one: a request it has read is
// repeated on the good task only if its method is idempotent.
func TestHTTPRetrySafety(t *testing.T) {
	rude, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rude.Close() })
	go func() {
		for {
			c, err := rude.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()

	tests := []struct {
		name   string
		method string
		failed int // of 10 requests, alternating between the two tasks
	}{
		{name: "get is repeated", method: http.MethodGet, failed: 0},
		{name: "put is repeated", method: http.MethodPut, failed: 0},
		{name: "post is not", method: http.MethodPost, failed: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, hclog.Info)
			a := newHTTPBackend(t, "a")
			port := freePort(t)
			rb := Backend{TaskID: "rude", Addr: rude.Addr().String()}
			if err := p.Update([]Route{httpRoute(port, rb, a.backend())}); err != nil {
				t.Fatalf("update: %v", err)
			}
			c := newClient(t, true)
			failed := 0
			for i := 0; i < 10; i++ {
				req, err := http.NewRequest(tc.method, url(port, "/"), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body := readAll(resp)
				switch resp.StatusCode {
				case http.StatusOK:
				case http.StatusBadGateway:
					failed++
				default:
					t.Fatalf("request %d: status %d %q", i, resp.StatusCode, body)
				}
			}
			if failed != tc.failed {
				t.Errorf("%d of 10 requests failed, want %d", failed, tc.failed)
			}
		})
	}
}

func TestHTTPNoBackend(t *testing.T) {
	tests := []struct {
		name     string
		backends []Backend
		code     int
		body     string
	}{
		{name: "empty set", code: http.StatusServiceUnavailable, body: "no healthy task"},
		{
			name:     "all dead",
			backends: []Backend{{TaskID: "d1", Addr: deadAddr(t)}, {TaskID: "d2", Addr: deadAddr(t)}},
			code:     http.StatusBadGateway,
			body:     "bad gateway",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, hclog.Debug)
			port := freePort(t)
			if err := p.Update([]Route{httpRoute(port, tc.backends...)}); err != nil {
				t.Fatalf("update: %v", err)
			}
			code, body, err := newClient(t, true).get(url(port, "/"))
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("got %d %q, want %d %q", code, body, tc.code, tc.body)
			}
		})
	}
}

func TestTCPProxy(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a, b := newTCPBackend(t, "a"), newTCPBackend(t, "b")
	port := freePort(t)
	dead := Backend{TaskID: "dead", Addr: deadAddr(t)}
	if err := p.Update([]Route{tcpRoute(port, dead, a.backend(), b.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	seen := map[string]int{}
	for i := 0; i < 12; i++ {
		msg := fmt.Sprintf("ping %d", i)
		name, echo, err := tcpExchange(addr, msg)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if echo != msg {
			t.Fatalf("connection %d: echo %q, want %q", i, echo, msg)
		}
		seen[name]++
	}
	if seen["a"] == 0 || seen["b"] == 0 || len(seen) != 2 {
		t.Errorf("answers = %v, want both a and b and nothing else", seen)
	}

	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, id := range []string{"a", "b", "dead"} {
			if n := p.ActiveConns(id); n != 0 {
				return fmt.Errorf("ActiveConns(%s) = %d, want 0", id, n)
			}
		}
		return nil
	})
}

func TestTCPNoBackendClosesConnection(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	port := freePort(t)
	if err := p.Update([]Route{tcpRoute(port)}); err != nil {
		t.Fatalf("update: %v", err)
	}
	_, _, err := tcpExchange(fmt.Sprintf("127.0.0.1:%d", port), "x")
	if err == nil {
		t.Fatal("exchange succeeded with no backend")
	}
}

func TestInFlightToRemovedBackend(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		p := newProxy(t, hclog.Debug)
		a, b := newHTTPBackend(t, "a"), newHTTPBackend(t, "b")
		port := freePort(t)
		if err := p.Update([]Route{httpRoute(port, b.backend())}); err != nil {
			t.Fatalf("update: %v", err)
		}

		type result struct {
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			body, err := newClient(t, true).getOK(url(port, "/hold"))
			done <- result{body, err}
		}()
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := p.ActiveConns("b"); n != 1 || b.held.Load() != 1 {
				return fmt.Errorf("held request to b not yet in flight (ActiveConns %d)", n)
			}
			return nil
		})

		if err := p.Update([]Route{httpRoute(port, a.backend())}); err != nil {
			t.Fatalf("update: %v", err)
		}
		if name, err := newClient(t, true).getOK(url(port, "/")); err != nil || name != "a" {
			t.Fatalf("new request after removal: %q %v, want a", name, err)
		}
		if n := p.ActiveConns("b"); n != 1 {
			t.Fatalf("ActiveConns(b) = %d while its request is held, want 1", n)
		}

		b.unhold()
		res := <-done
		if res.err != nil || res.body != "b" {
			t.Fatalf("in-flight request: %q %v, want b", res.body, res.err)
		}
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := p.ActiveConns("b"); n != 0 {
				return fmt.Errorf("ActiveConns(b) = %d after its request ended", n)
			}
			return nil
		})
	})

	t.Run("tcp", func(t *testing.T) {
		p := newProxy(t, hclog.Debug)
		a, b := newTCPBackend(t, "a"), newTCPBackend(t, "b")
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if err := p.Update([]Route{tcpRoute(port, b.backend())}); err != nil {
			t.Fatalf("update: %v", err)
		}

		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		greeting := make([]byte, 2)
		if _, err := c.Read(greeting); err != nil || string(greeting) != "b\n" {
			t.Fatalf("greeting %q %v, want b", greeting, err)
		}

		if err := p.Update([]Route{tcpRoute(port, a.backend())}); err != nil {
			t.Fatalf("update: %v", err)
		}
		if name, _, err := tcpExchange(addr, "x"); err != nil || name != "a" {
			t.Fatalf("new connection after removal: %q %v, want a", name, err)
		}
		if n := p.ActiveConns("b"); n != 1 {
			t.Fatalf("ActiveConns(b) = %d with its connection open, want 1", n)
		}

		// The old connection still works both ways, then ends.
		if _, err := c.Write([]byte("still")); err != nil {
			t.Fatalf("write on old connection: %v", err)
		}
		c.(*net.TCPConn).CloseWrite()
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err != nil || string(buf) != "still" {
			t.Fatalf("echo on old connection: %q %v", buf, err)
		}
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := p.ActiveConns("b"); n != 0 {
				return fmt.Errorf("ActiveConns(b) = %d after its connection ended", n)
			}
			return nil
		})
	})
}

func TestUpdatePorts(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a := newHTTPBackend(t, "a")
	t1 := newTCPBackend(t, "t1")
	port1, port2, port3 := freePort(t), freePort(t), freePort(t)
	if err := p.Update([]Route{httpRoute(port1, a.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}
	c := newClient(t, true)
	if _, err := c.getOK(url(port1, "/")); err != nil {
		t.Fatalf("port1: %v", err)
	}

	// port3 is taken by someone else: its error comes back, the rest of
	// the update still applies.
	squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port3))
	if err != nil {
		t.Fatalf("squat port3: %v", err)
	}
	defer squatter.Close()
	err = p.Update([]Route{
		httpRoute(port2, a.backend()),
		tcpRoute(port3, t1.backend()),
	})
	if !errors.Is(err, ErrListen) {
		t.Fatalf("update error = %v, want ErrListen for port3", err)
	}

	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port1)); !isRefused(err) {
		t.Errorf("dial removed port1: %v, want connection refused", err)
	}
	if _, err := newClient(t, true).getOK(url(port2, "/")); err != nil {
		t.Errorf("new port2: %v", err)
	}

	// Once the port is free, the next update opens it; a protocol change
	// on a port reopens it.
	squatter.Close()
	err = p.Update([]Route{
		tcpRoute(port2, t1.backend()),
		tcpRoute(port3, t1.backend()),
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	for _, port := range []int{port2, port3} {
		name, _, err := tcpExchange(fmt.Sprintf("127.0.0.1:%d", port), "x")
		if err != nil || name != "t1" {
			t.Errorf("tcp on port %d: %q %v, want t1", port, name, err)
		}
	}
}

func TestUpdateInvalidRoutesKeepOthers(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a := newHTTPBackend(t, "a")
	port, other := freePort(t), freePort(t)

	err := p.Update([]Route{
		httpRoute(port, a.backend(), Backend{TaskID: "bad", Addr: "nowhere"}),
		{App: "x", Protocol: "udp", Listen: other},
		{App: "dup", Protocol: ProtocolTCP, Listen: port},
		{App: "y", Protocol: ProtocolTCP, Listen: 0},
	})
	if !errors.Is(err, ErrInvalidRoute) {
		t.Fatalf("update error = %v, want ErrInvalidRoute", err)
	}
	for _, want := range []string{`"nowhere"`, `"udp"`, `app "dup"`, "ingress port 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("update error %q does not name %s", err, want)
		}
	}
	if name, err := newClient(t, true).getOK(url(port, "/")); err != nil || name != "a" {
		t.Errorf("valid route: %q %v, want a", name, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	p := newProxy(t, hclog.Debug)
	a := newHTTPBackend(t, "a")
	port := freePort(t)
	if err := p.Update([]Route{httpRoute(port, a.backend())}); err != nil {
		t.Fatalf("update: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := p.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
	if err := p.Update(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("update after close: %v, want ErrClosed", err)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); !isRefused(err) {
		t.Errorf("dial after close: %v, want connection refused", err)
	}
}

// TestLoadWhileSwapping sends requests from keep-alive and one-shot
// clients while the rotation changes every 50ms the way a rolling update
// changes it: a new task joins, the oldest leaves, and a task that left is
// stopped as soon as ActiveConns says it is drained. A dead task stays in
// rotation throughout. No request may fail, and no request may reach a
// task after its drain.
func TestLoadWhileSwapping(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	p := newProxy(t, hclog.Debug)
	dead := Backend{TaskID: "dead", Addr: deadAddr(t)}
	port := freePort(t)

	newTask := func(n int) *httpBackend {
		return newHTTPBackend(t, fmt.Sprintf("t%d", n))
	}
	route := func(live []*httpBackend) Route {
		r := httpRoute(port, dead)
		for _, b := range live {
			r.Backends = append(r.Backends, b.backend())
		}
		return r
	}

	live := []*httpBackend{newTask(0), newTask(1), newTask(2)}
	all := append([]*httpBackend(nil), live...)
	if err := p.Update([]Route{route(live)}); err != nil {
		t.Fatalf("update: %v", err)
	}

	// The rotation changer, and the drains it starts.
	var drains sync.WaitGroup
	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		n := len(live)
		for {
			select {
			case <-stop:
				swapped <- n - 3
				return
			case <-tick.C:
			}
			old := live[0]
			live = append(live[1:], newTask(n))
			all = append(all, live[len(live)-1])
			n++
			if err := p.Update([]Route{route(live)}); err != nil {
				t.Errorf("update: %v", err)
			}
			drains.Add(1)
			go func() {
				defer drains.Done()
				old.drain(t, p)
			}()
		}
	}()

	const clients, perClient = 20, 100
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		answered = map[string]int{}
	)
	for i := 0; i < clients; i++ {
		c := newClient(t, i%2 == 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perClient; j++ {
				name, err := c.getOK(url(port, "/"))
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					answered[name]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	swaps := <-swapped
	drains.Wait()

	t.Logf("%d requests, %d swaps, answers %v", clients*perClient, swaps, answered)
	if len(failures) > 0 {
		t.Errorf("%d failed requests, first: %s", len(failures), failures[0])
	}
	for _, b := range all {
		if n := b.late.Load(); n > 0 {
			t.Errorf("%d requests reached task %s after it was drained", n, b.name)
		}
	}
	if swaps < 2 {
		t.Errorf("only %d swaps during the load", swaps)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, b := range all {
			if n := p.ActiveConns(b.name); n != 0 {
				return fmt.Errorf("ActiveConns(%s) = %d after the load", b.name, n)
			}
		}
		return nil
	})
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}
