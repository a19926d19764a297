package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// member is a gossip member of role, alive or not.
func member(name, role string, alive bool) gossip.Member {
	return gossip.Member{Meta: gossip.Meta{Name: name, Role: role,
		Address: "127.0.0.1"}, Addr: "127.0.0.1:7073", Alive: alive}
}

func TestComebacks(t *testing.T) {
	m := func(name string, alive bool) gossip.Member {
		return member(name, pb.RoleManager, alive)
	}
	tests := []struct {
		name  string
		views [][]gossip.Member // successive pool views
		want  [][]string        // managers back after each view
	}{
		{
			name:  "alive from the start is no comeback",
			views: [][]gossip.Member{{m("m1", true)}, {m("m1", true)}},
			want:  [][]string{nil, nil},
		},
		{
			name: "dead then alive comes back once",
			views: [][]gossip.Member{{m("m1", true), m("m2", true)},
				{m("m1", false), m("m2", true)},
				{m("m1", true), m("m2", true)},
				{m("m1", true), m("m2", true)}},
			want: [][]string{nil, nil, {"m1"}, nil},
		},
		{
			name: "forgotten by the pool while dead still comes back",
			views: [][]gossip.Member{{m("m1", false), m("m2", false)},
				{m("m2", false)}, {},
				{m("m1", true), m("m2", true)}},
			want: [][]string{nil, nil, nil, {"m1", "m2"}},
		},
		{
			name: "workers are not managers",
			views: [][]gossip.Member{{member("w2", pb.RoleWorker, false)},
				{member("w2", pb.RoleWorker, true)}},
			want: [][]string{nil, nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c comebacks
			for i, view := range tc.views {
				var got []string
				for _, b := range c.update(view) {
					got = append(got, b.Meta.Name)
				}
				if !slices.Equal(got, tc.want[i]) {
					t.Errorf("view %d: back %v, want %v", i, got, tc.want[i])
				}
			}
		})
	}
}

// scriptedPool is a pool whose members the test sets; it records joins.
type scriptedPool struct {
	fakePool
	mu      sync.Mutex
	members []gossip.Member
	calls   int // of Members
	joins   [][]string
}

func (p *scriptedPool) set(ms ...gossip.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.members = ms
}

func (p *scriptedPool) Members() []gossip.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	return append([]gossip.Member(nil), p.members...)
}

func (p *scriptedPool) Join(addrs []string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.joins = append(p.joins, addrs)
	return len(addrs), nil
}

// looks is how many times Members was called.
func (p *scriptedPool) looks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func (p *scriptedPool) joined() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.joins)
}

// A manager the pool saw dead and sees alive again, as after a healed
// partition, is joined at once (so that it learns this worker lives),
// and the connection to it is closed: a stream that waited on it as on
// a black hole breaks and moves to a fresh one.
func TestManagerBackRejoinsAndReconnects(t *testing.T) {
	mgr := startManager(t, "secret")
	host, port, _ := net.SplitHostPort(mgr.addr)
	rpcPort, _ := strconv.Atoi(port)
	m1 := gossip.Member{Meta: gossip.Meta{Name: "m1", Role: pb.RoleManager,
		Address: host, RPCPort: rpcPort}, Addr: host + ":7073", Alive: true}

	a := &Agent{
		log:    testutil.Logger(t, hclog.Debug),
		mgrs:   newManagers([]string{mgr.addr}, dialOptions()),
		rejoin: make(chan struct{}, 1),
	}
	defer a.mgrs.close()
	m2 := member("m2", pb.RoleManager, true)
	p := &scriptedPool{}
	p.set(m1, m2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := a.mgrs.client(mgr.addr)
	if err != nil {
		t.Fatal(err)
	}
	mgr.assign(task("t1"))
	stream, err := c.Assignments(ctx, &pb.AssignmentsRequest{Node: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	broken := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				broken <- err
				return
			}
		}
	}()

	done := make(chan struct{})
	go func() {
		defer close(done)
		a.rejoinManagers(ctx, p, []string{host + ":7073"})
	}()
	defer func() { cancel(); <-done }()

	// m1 dead while m2 lives (so the pool is not without a manager, which
	// would rejoin anyway): nothing to do until m1 is back.
	dead := m1
	dead.Alive = false
	p.set(dead, m2)
	seen := p.looks()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if p.looks() < seen+2 {
			return errors.New("rejoinManagers has not looked at the pool twice")
		}
		return nil
	})
	if n := p.joined(); n > 0 {
		t.Errorf("%d joins while m2 was alive and m1 dead, want none", n)
	}
	select {
	case err := <-broken:
		t.Fatalf("stream broke while the manager was dead in gossip: %v", err)
	default:
	}

	p.set(m1, m2)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if p.joined() == 0 {
			return errors.New("manager back in gossip, not joined")
		}
		return nil
	})
	select {
	case err := <-broken:
		t.Logf("stream ended on the manager's return: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after the manager came back in gossip")
	}
}

// flakyManager accepts reports, or refuses them while down, counting
// both.
type flakyManager struct {
	pb.UnimplementedWorkerServer
	mu                sync.Mutex
	down              bool
	hang              bool // Report waits for its caller to give up
	accepted, refused int
}

func (m *flakyManager) Report(ctx context.Context, _ *pb.ReportRequest) (*pb.ReportResponse, error) {
	m.mu.Lock()
	hang := m.hang
	m.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		m.refused++
		return nil, status.Error(codes.Unavailable, "partitioned")
	}
	m.accepted++
	return &pb.ReportResponse{}, nil
}

func (m *flakyManager) setDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *flakyManager) counts() (accepted, refused int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accepted, m.refused
}

// startFlaky serves a flakyManager and returns it with its address.
func startFlaky(t *testing.T) (*flakyManager, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mgr := &flakyManager{}
	srv := grpc.NewServer()
	pb.RegisterWorkerServer(srv, mgr)
	go func() { _ = srv.Serve(lis) }() // ends with Stop
	t.Cleanup(srv.Stop)
	return mgr, lis.Addr().String()
}

// Reports that go through again after failing, as when a partition
// heals, ask for a gossip rejoin, once per recovery; reports that never
// failed ask for none.
func TestReportsBackAskForRejoin(t *testing.T) {
	mgr, addr := startFlaky(t)
	mgrs := newManagers([]string{addr}, dialOptions())
	defer mgrs.close()
	rep := newReporter("w1", mgrs, time.Hour, testutil.Logger(t, hclog.Debug))
	var mu sync.Mutex
	asked := 0
	rep.recovered = func() {
		mu.Lock()
		defer mu.Unlock()
		asked++
	}
	askedFor := func() int {
		mu.Lock()
		defer mu.Unlock()
		return asked
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep.run(ctx)
	}()
	defer func() { cancel(); <-done }()

	update := func(state string) {
		rep.update(&pb.TaskReport{TaskId: "t1", State: state})
	}
	// more waits for at least n more accepted and r more refused
	// reports than now.
	more := func(n, r int) func() error {
		a0, r0 := mgr.counts()
		return func() error {
			a, rr := mgr.counts()
			if a < a0+n || rr < r0+r {
				return fmt.Errorf("%d more reports accepted, %d more refused; want %d and %d",
					a-a0, rr-r0, n, r)
			}
			return nil
		}
	}
	wantAsked := func(n int) {
		t.Helper()
		if got := askedFor(); got != n {
			t.Errorf("%d rejoins asked, want %d", got, n)
		}
	}

	accepted := more(1, 0)
	update(pb.TaskRunning)
	testutil.WaitFor(t, 5*time.Second, accepted)
	wantAsked(0)

	for round := 1; round <= 2; round++ {
		mgr.setDown(true)
		refused := more(0, 2) // the first try and a retry
		update(pb.TaskFailed)
		testutil.WaitFor(t, 5*time.Second, refused)
		accepted := more(1, 0)
		mgr.setDown(false)
		testutil.WaitFor(t, 5*time.Second, accepted)
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := askedFor(); n != round {
				return fmt.Errorf("%d rejoins asked after %d recoveries", n, round)
			}
			return nil
		})

		accepted = more(1, 0)
		update(pb.TaskRunning) // goes through at once: no rejoin
		testutil.WaitFor(t, 5*time.Second, accepted)
		wantAsked(round)
	}
}

// A manager whose report timed out while another took it is redialed:
// its connection may be a black hole that a stream waits on. One that
// refused at once is not.
func TestHungManagersRedialed(t *testing.T) {
	hung, hungAddr := startFlaky(t)
	refusing, refusingAddr := startFlaky(t)
	ok, okAddr := startFlaky(t)
	hung.mu.Lock()
	hung.hang = true
	hung.mu.Unlock()
	refusing.setDown(true)

	mgrs := newManagers([]string{hungAddr, refusingAddr, okAddr}, dialOptions())
	defer mgrs.close()
	rep := newReporter("w1", mgrs, time.Hour, testutil.Logger(t, hclog.Debug))
	rep.timeout = 200 * time.Millisecond
	var mu sync.Mutex
	var redialed [][]string
	rep.hung = func(addrs []string) {
		mu.Lock()
		defer mu.Unlock()
		redialed = append(redialed, addrs)
	}
	rep.recovered = func() { t.Error("rejoin asked though the report went through") }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep.run(ctx)
	}()
	defer func() { cancel(); <-done }()

	rep.update(&pb.TaskReport{TaskId: "t1", State: pb.TaskRunning})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if a, _ := ok.counts(); a == 0 {
			return errors.New("report not taken")
		}
		mu.Lock()
		defer mu.Unlock()
		if len(redialed) == 0 {
			return errors.New("nobody redialed")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(redialed) != 1 || !slices.Equal(redialed[0], []string{hungAddr}) {
		t.Errorf("redialed %v, want [[%s]] (not %s, which refused)", redialed, hungAddr, refusingAddr)
	}
}
