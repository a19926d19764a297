package ingress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// newProxy returns a proxy on 127.0.0.1, closed when the test ends.
func newProxy(t testing.TB, level hclog.Level) *Proxy {
	t.Helper()
	log := testutil.Logger(t, hclog.Debug)
	log.SetLevel(level)
	p, err := New(Config{BindAddr: "127.0.0.1", Logger: log})
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// deadAddr returns an address nothing listens on any more.
func deadAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// httpBackend is a test task that answers with its name. A request to
// /hold blocks until release is closed; /echo answers the request body
// and /xff the X-Forwarded-For header.
type httpBackend struct {
	name    string
	srv     *httptest.Server
	hits    atomic.Int64
	held    atomic.Int64
	release chan struct{}

	// stopped is set once the task is drained; late counts the
	// requests that reached it afterwards.
	stopped atomic.Bool
	late    atomic.Int64
}

func newHTTPBackend(t testing.TB, name string) *httpBackend {
	t.Helper()
	b := &httpBackend{name: name, release: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(func() {
		b.unhold()
		b.srv.Close()
	})
	return b
}

func (b *httpBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	if b.stopped.Load() {
		b.late.Add(1)
	}
	switch r.URL.Path {
	case "/hold":
		b.held.Add(1)
		<-b.release
	case "/echo":
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", b.name, body)
		return
	case "/xff":
		fmt.Fprintf(w, "%s", r.Header.Get("X-Forwarded-For"))
		return
	}
	fmt.Fprint(w, b.name)
}

func (b *httpBackend) unhold() {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

// drain waits until the proxy has no connection or request open to b, as
// the agent does before it stops a task, then stops b.
func (b *httpBackend) drain(t testing.TB, p *Proxy) {
	deadline := time.Now().Add(10 * time.Second)
	for p.ActiveConns(b.name) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("task %s not drained after 10s: ActiveConns %d",
				b.name, p.ActiveConns(b.name))
			break
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	b.stopped.Store(true)
	b.srv.Close()
}

func (b *httpBackend) backend() Backend {
	return Backend{TaskID: b.name, Addr: b.srv.Listener.Addr().String()}
}

// tcpBackend is a test task that greets with its name and a newline, then
// echoes what it reads until EOF, then closes.
type tcpBackend struct {
	name string
	ln   net.Listener
}

func newTCPBackend(t testing.TB, name string) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcp backend %s: %v", name, err)
	}
	b := &tcpBackend{name: name, ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
	return b
}

func (b *tcpBackend) backend() Backend {
	return Backend{TaskID: b.name, Addr: b.ln.Addr().String()}
}

// tcpExchange connects to addr, sends msg, half-closes and returns the
// greeting and the echo.
func tcpExchange(addr, msg string) (name, echo string, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))

	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", fmt.Errorf("reading greeting: %w", err)
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return "", "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", "", err
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return "", "", fmt.Errorf("reading echo: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), string(rest), nil
}

// countingClient is an HTTP client that counts the connections it dials.
type countingClient struct {
	*http.Client
	dials atomic.Int64
}

func newClient(t testing.TB, keepAlive bool) *countingClient {
	c := &countingClient{}
	d := &net.Dialer{Timeout: 2 * time.Second}
	tr := &http.Transport{
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, n, a)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	c.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return c
}

// get requests url and returns the status and body.
func (c *countingClient) get(url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// getOK is get that fails on anything but a 200.
func (c *countingClient) getOK(url string) (string, error) {
	code, body, err := c.get(url)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d: %s", url, code, body)
	}
	return body, nil
}

func httpRoute(port int, backends ...Backend) Route {
	return Route{App: "web", Port: "http", Protocol: ProtocolHTTP,
		Listen: port, Backends: backends}
}

func tcpRoute(port int, backends ...Backend) Route {
	return Route{App: "db", Port: "tcp", Protocol: ProtocolTCP,
		Listen: port, Backends: backends}
}

func url(port int, path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(port) + path
}

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
