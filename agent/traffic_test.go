package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/agent/dns"
	"github.com/hivemind-orch/hivemind/agent/ingress"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestEndpointSet(t *testing.T) {
	web := &pb.ServiceEndpoints{
		App: "web",
		Ports: []*pb.Port{
			{Name: "metrics", Ingress: 9090}, // no protocol: per connection
			{Name: "http", Protocol: pb.ProtocolHTTP, Ingress: 8080},
			{Name: "admin", Protocol: pb.ProtocolTCP}, // not published
		},
		Endpoints: []*pb.Endpoint{
			{TaskId: "t1", Address: "10.0.0.1",
				Ports: map[string]int32{"http": 20000, "admin": 20001}},
			{TaskId: "t2", Address: "10.0.0.2",
				Ports: map[string]int32{"http": 20002, "metrics": 20003}},
			{TaskId: "t3", Ports: map[string]int32{"http": 20004}},
		},
	}
	api := &pb.ServiceEndpoints{App: "api", Ports: []*pb.Port{
		{Name: "grpc", Protocol: pb.ProtocolTCP, Ingress: 7000}}}

	tests := []struct {
		name      string
		svcs      []*pb.ServiceEndpoints
		wantRoute []ingress.Route
		wantTable map[string][]dns.Endpoint
	}{
		{name: "empty", wantTable: map[string][]dns.Endpoint{}},
		{
			name: "ingress ports only, backends with that port",
			svcs: []*pb.ServiceEndpoints{web},
			wantRoute: []ingress.Route{
				{App: "web", Port: "http", Protocol: ingress.ProtocolHTTP,
					Listen: 8080, Backends: []ingress.Backend{
						{TaskID: "t1", Addr: "10.0.0.1:20000"},
						{TaskID: "t2", Addr: "10.0.0.2:20002"},
					}},
				{App: "web", Port: "metrics", Protocol: ingress.ProtocolTCP,
					Listen: 9090, Backends: []ingress.Backend{
						{TaskID: "t2", Addr: "10.0.0.2:20003"},
					}},
			},
			wantTable: map[string][]dns.Endpoint{"web": {
				{TaskID: "t1", IP: "10.0.0.1",
					Ports: map[string]int{"http": 20000, "admin": 20001}},
				{TaskID: "t2", IP: "10.0.0.2",
					Ports: map[string]int{"http": 20002, "metrics": 20003}},
				{TaskID: "t3", Ports: map[string]int{"http": 20004}},
			}},
		},
		{
			name: "an app without endpoints keeps its port and name",
			svcs: []*pb.ServiceEndpoints{api},
			wantRoute: []ingress.Route{{App: "api", Port: "grpc",
				Protocol: ingress.ProtocolTCP, Listen: 7000}},
			wantTable: map[string][]dns.Endpoint{"api": {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes, table := endpointSet(tt.svcs)
			if !reflect.DeepEqual(routes, tt.wantRoute) {
				t.Errorf("routes = %+v\nwant %+v", routes, tt.wantRoute)
			}
			if !reflect.DeepEqual(table, tt.wantTable) {
				t.Errorf("table = %+v\nwant %+v", table, tt.wantTable)
			}
		})
	}
}

func TestEndpointsServed(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(
		func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "t1")
		}))
	defer backend.Close()
	bport := backend.Listener.Addr().(*net.TCPAddr).Port
	ing := freePort(t)

	// No task runs here: the index is reported all the same.
	h := startAgent(t, "secret", newFakeRuntime())
	web := &pb.ServiceEndpoints{
		App: "web",
		Ports: []*pb.Port{{Name: "http", Protocol: pb.ProtocolHTTP,
			Ingress: int32(ing)}},
		Endpoints: []*pb.Endpoint{{TaskId: "t1", Address: "127.0.0.1",
			Ports: map[string]int32{"http": int32(bport)}}},
	}
	h.mgr.setEndpoints(7, web)

	url := "http://127.0.0.1:" + strconv.Itoa(ing) + "/"
	testutil.WaitFor(t, wait, answers(url, "t1"))
	testutil.WaitFor(t, wait, h.mgr.reportedIndex(7, 1))
	dnsAddr := net.JoinHostPort("127.0.0.1",
		strconv.Itoa(h.mgr.registeredDNSPort()))
	testutil.WaitFor(t, wait, resolves(dnsAddr, "web.hivemind.", "127.0.0.1", bport))

	// No manager answers: the last set is still served.
	opened := h.mgr.endpointStreams()
	h.mgr.setEndpointsRefuse(true)
	testutil.WaitFor(t, wait, func() error {
		if n := h.mgr.endpointStreams(); n < opened+3 {
			return fmt.Errorf("%d endpoint stream reconnects, want 3",
				n-opened)
		}
		return nil
	})
	if err := answers(url, "t1")(); err != nil {
		t.Fatalf("during the outage: %v", err)
	}
	if err := resolves(dnsAddr, "web.hivemind.", "127.0.0.1", bport)(); err != nil {
		t.Fatalf("during the outage: %v", err)
	}

	// Back, with t1 gone: the ingress has no backend left.
	h.mgr.setEndpointsRefuse(false)
	empty := proto.Clone(web).(*pb.ServiceEndpoints)
	empty.Endpoints = nil
	h.mgr.setEndpoints(8, empty)
	testutil.WaitFor(t, wait, h.mgr.reportedIndex(8, 1))
	testutil.WaitFor(t, wait, answersStatus(url, http.StatusServiceUnavailable))

	// A lagging manager's older set would bring t1 back; it is ignored.
	h.mgr.setEndpoints(5, web)
	testutil.WaitFor(t, wait, h.mgr.streamedEndpoints(5))
	h.mgr.setEndpoints(9, empty)
	testutil.WaitFor(t, wait, h.mgr.reportedIndex(9, 1))
	if err := h.mgr.reportedIndex(5, 1)(); err == nil {
		t.Error("reported serving the stale set 5")
	}
	if err := answersStatus(url, http.StatusServiceUnavailable)(); err != nil {
		t.Errorf("after the stale set: %v", err)
	}
}

func TestEndpointsIndexResent(t *testing.T) {
	h := startAgent(t, "secret", newFakeRuntime(),
		func(_ *harness, c *Config) {
			c.ReportInterval = 20 * time.Millisecond
		})
	h.mgr.setEndpoints(4)

	// Nothing changes, yet the index keeps coming with every full
	// report, so that a new leader learns it.
	testutil.WaitFor(t, wait, h.mgr.reportedIndex(4, 5))
}

func TestDrainingStop(t *testing.T) {
	tests := []struct {
		name         string
		drainTimeout time.Duration
		closeConn    bool // the client ends its connection
	}{
		// Connections through other workers' ingress are not seen
		// here, so the last local one ending does not cut the drain.
		{name: "drains for drain_timeout after the last local connection ends",
			drainTimeout: 2 * time.Second, closeConn: true},
		{name: "stops at the drain timeout with a connection open",
			drainTimeout: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := startHoldServer(t)
			ing := freePort(t)
			rt := newFakeRuntime()
			h := startAgent(t, "secret", rt)

			tk := task("t1")
			tk.Ports = map[string]int32{"tcp": int32(be.port)}
			tk.Spec.Ports = []*pb.Port{{Name: "tcp",
				Protocol: pb.ProtocolTCP, Ingress: int32(ing)}}
			tk.Spec.Update = &pb.UpdateSpec{
				DrainTimeout: int64(tt.drainTimeout),
				StopTimeout:  int64(time.Second),
			}
			h.mgr.assign(tk)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
			svc := &pb.ServiceEndpoints{App: "web", Ports: tk.Spec.Ports,
				Endpoints: []*pb.Endpoint{{TaskId: "t1",
					Address: "127.0.0.1", Ports: tk.Ports}}}
			h.mgr.setEndpoints(10, svc)

			// A client holds a connection to t1 through the ingress.
			conn := dialThrough(t, ing, be)

			// Desired stop: draining, and kept running while the
			// task is in rotation somewhere.
			stop := proto.Clone(tk).(*pb.Task)
			stop.Desired = pb.DesiredStop
			h.mgr.assign(stop)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskDraining, false))
			h.mgr.setEndpoints(11, &pb.ServiceEndpoints{App: "web",
				Ports: tk.Spec.Ports})
			testutil.WaitFor(t, wait, h.mgr.reportedIndex(11, 1))
			h.mgr.assign(stop, task("t2"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t2", pb.TaskRunning, true))
			if rt.called("stop t1") {
				t.Fatal("t1 stopped before it was out of rotation")
			}

			// Out of rotation: it waits for the open connection.
			out := proto.Clone(stop).(*pb.Task)
			out.OutOfRotation = true
			rotated := time.Now()
			h.mgr.assign(out, task("t2"))
			if tt.closeConn {
				h.mgr.assign(out, task("t2"), task("t3"))
				testutil.WaitFor(t, wait, h.mgr.hasReport("t3", pb.TaskRunning, true))
				if rt.called("stop t1") {
					t.Fatal("t1 stopped with a connection open")
				}
				conn.Close()
			}

			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskStopped, false))
			if d := time.Since(rotated); d < tt.drainTimeout {
				t.Errorf("stopped %s after leaving rotation, "+
					"before the drain timeout %s", d, tt.drainTimeout)
			}
			if d, _ := rt.stopTimeout("t1"); d != time.Second {
				t.Errorf("stop timeout = %s, want 1s", d)
			}
			states := h.mgr.states("t1")
			if i := slices.Index(states, pb.TaskDraining); i < 0 ||
				i > slices.Index(states, pb.TaskStopped) {
				t.Errorf("states reported %v: want draining before "+
					"stopped", states)
			}
		})
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// answers is a waitFor condition: GET url returns 200 with body want.
func answers(url, want string) func() error {
	return func() error {
		body, code, err := get(url)
		if err != nil {
			return err
		}
		if code != http.StatusOK || body != want {
			return fmt.Errorf("GET %s: %d %q, want 200 %q", url, code,
				body, want)
		}
		return nil
	}
}

// answersStatus is a waitFor condition: GET url returns code.
func answersStatus(url string, code int) func() error {
	return func() error {
		_, got, err := get(url)
		if err != nil {
			return err
		}
		if got != code {
			return fmt.Errorf("GET %s: status %d, want %d", url, got, code)
		}
		return nil
	}
}

func get(url string) (string, int, error) {
	c := &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// resolves is a waitFor condition: the DNS server at addr answers name
// with A ip and SRV records for its http port.
func resolves(addr, name, ip string, port int) func() error {
	return func() error {
		c := &mdns.Client{Timeout: time.Second}
		q := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			return fmt.Errorf("A %s: %w", name, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != ip {
			return fmt.Errorf("A %s: answer %v, want %s", name, r.Answer, ip)
		}

		srv := "_http._tcp." + name
		q = new(mdns.Msg).SetQuestion(srv, mdns.TypeSRV)
		r, _, err = c.Exchange(q, addr)
		if err != nil {
			return fmt.Errorf("SRV %s: %w", srv, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.SRV).Port != uint16(port) {
			return fmt.Errorf("SRV %s: answer %v, want port %d", srv,
				r.Answer, port)
		}
		return nil
	}
}

// holdServer accepts TCP connections and keeps them open until the
// client closes them.
type holdServer struct {
	port     int
	accepted atomic.Int32
}

func startHoldServer(t *testing.T) *holdServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &holdServer{port: lis.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c) // until the client closes
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// dialThrough opens a connection to the ingress port and waits until
// it reaches be. The caller may close it early; the test's end does.
func dialThrough(t *testing.T, port int, be *holdServer) net.Conn {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var conn net.Conn
	testutil.WaitFor(t, wait, func() error {
		if conn == nil {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("ingress %s: %w", addr, err)
			}
			conn = c
		}
		if be.accepted.Load() == 0 {
			return errors.New("no connection reached the backend")
		}
		return nil
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}
