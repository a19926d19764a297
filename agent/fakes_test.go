package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// fakeContainer is a container of fakeRuntime.
type fakeContainer struct {
	spec    runtime.Spec
	running bool
	code    int
}

// fakeRuntime records calls and keeps containers in memory, following
// the runtime.Runtime contract: Stop and Remove delete the container and
// report the exit of a running one (143, 137); a missing one is no error.
type fakeRuntime struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	pullErr    map[string]error
	stopErr    error // Stop and Remove fail with it, touching nothing
	calls      []string
	starts     map[string]runtime.Spec
	stops      map[string]time.Duration
	exits      chan runtime.Exit

	// With block set (see blockStarts), Pull or Start waits for it to
	// be closed or for its ctx to end; a call whose ctx ended returns
	// the ctx's error and makes nothing.
	block      chan struct{}
	blockStage string // "pull" or "start"
	// onRelease is what a blocked Start does once unblocked: "" starts
	// the container, "fail" fails on its own but leaves a created, not
	// started, container behind (as when containerd's cleanup fails).
	onRelease string
	inflight  int      // Pull and Start calls running now
	peak      int      // the most inflight has been
	cancelled []string // "pull IMAGE" or "start ID" of calls that saw their ctx end
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		containers: make(map[string]*fakeContainer),
		pullErr:    make(map[string]error),
		starts:     make(map[string]runtime.Spec),
		stops:      make(map[string]time.Duration),
		exits:      make(chan runtime.Exit, 100),
	}
}

func (f *fakeRuntime) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// blockStarts makes every Pull (stage "pull") or Start (stage "start")
// wait until unblock or until its ctx ends; onRelease is what a Start
// does once unblocked (see fakeRuntime.onRelease).
func (f *fakeRuntime) blockStarts(stage, onRelease string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block, f.blockStage, f.onRelease = make(chan struct{}), stage, onRelease
}

// unblock lets the blocked Pull and Start calls go on.
func (f *fakeRuntime) unblock() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.block != nil {
		close(f.block)
		f.block = nil
	}
}

// enter counts a Pull or Start call running and, if stage is blocked,
// waits for unblock or ctx with f.mu released. It returns ctx's error,
// and records the call as cancelled, if ctx has ended, whether before
// the call, while it was blocked or by the time it was unblocked. f.mu
// is held on entry and return.
func (f *fakeRuntime) enter(ctx context.Context, stage, name string) error {
	f.inflight++
	f.peak = max(f.peak, f.inflight)
	if block := f.block; block != nil && f.blockStage == stage {
		f.mu.Unlock()
		select {
		case <-block:
		case <-ctx.Done():
		}
		f.mu.Lock()
	}
	if err := ctx.Err(); err != nil {
		f.cancelled = append(f.cancelled, stage+" "+name)
		return err
	}
	return nil
}

// concurrency returns the Pull and Start calls running now and the most
// that ever ran at once.
func (f *fakeRuntime) concurrency() (now, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight, f.peak
}

// cancelledCalls returns the Pull and Start calls that saw their ctx
// end.
func (f *fakeRuntime) cancelledCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cancelled...)
}

// containerIDs returns the IDs of the containers there now.
func (f *fakeRuntime) containerIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.containers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (f *fakeRuntime) Pull(ctx context.Context, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("pull %s", image)
	defer func() { f.inflight-- }()
	if err := f.enter(ctx, "pull", image); err != nil {
		return err
	}
	return f.pullErr[image]
}

func (f *fakeRuntime) Start(ctx context.Context, s runtime.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start %s", s.ID)
	defer func() { f.inflight-- }()
	blocked := f.block != nil && f.blockStage == "start"
	if err := f.enter(ctx, "start", s.ID); err != nil {
		return err
	}
	if _, ok := f.containers[s.ID]; ok {
		return fmt.Errorf("container %q: %w", s.ID, runtime.ErrExists)
	}
	if blocked && f.onRelease == "fail" {
		f.containers[s.ID] = &fakeContainer{spec: s}
		return fmt.Errorf("container %q: start: task failed", s.ID)
	}
	f.containers[s.ID] = &fakeContainer{spec: s, running: true}
	f.starts[s.ID] = s
	return nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop %s", id)
	if f.stopErr != nil {
		return f.stopErr
	}
	f.stops[id] = timeout
	c, ok := f.containers[id]
	if ok && c.running {
		f.exits <- runtime.Exit{ID: id, Code: 143, At: time.Now()}
	}
	delete(f.containers, id)
	return nil
}

func (f *fakeRuntime) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remove %s", id)
	if f.stopErr != nil {
		return f.stopErr
	}
	if c, ok := f.containers[id]; ok && c.running {
		f.exits <- runtime.Exit{ID: id, Code: 137, At: time.Now()}
	}
	delete(f.containers, id)
	return nil
}

func (f *fakeRuntime) List(context.Context) ([]runtime.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.Container
	for id, c := range f.containers {
		out = append(out, runtime.Container{
			ID: id, Labels: c.spec.Labels, Running: c.running,
			ExitCode: c.code,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeRuntime) Exits() <-chan runtime.Exit { return f.exits }

func (f *fakeRuntime) Watch(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("watch %s", id)
	if _, ok := f.containers[id]; !ok {
		return fmt.Errorf("container %q: %w", id, runtime.ErrNotFound)
	}
	return nil
}

func (f *fakeRuntime) Close() error { return nil }

// add puts a container in place as if an earlier agent of node w1 had
// started it.
func (f *fakeRuntime) add(id string, running bool, code int) {
	f.addLabelled(id, map[string]string{LabelTaskID: id, LabelNode: "w1"},
		running, code)
}

// addLabelled puts a container with the given labels in place.
func (f *fakeRuntime) addLabelled(id string, labels map[string]string,
	running bool, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = &fakeContainer{
		spec:    runtime.Spec{ID: id, Labels: labels},
		running: running, code: code,
	}
}

// failStops makes every Stop and Remove fail with err, as when
// containerd is gone.
func (f *fakeRuntime) failStops(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopErr = err
}

// exit makes a running container exit with code.
func (f *fakeRuntime) exit(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.running, c.code = false, code
	}
	f.exits <- runtime.Exit{ID: id, Code: code, At: time.Now()}
}

// called reports whether call was made.
func (f *fakeRuntime) called(call string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c == call {
			return true
		}
	}
	return false
}

// has reports whether a container with id exists.
func (f *fakeRuntime) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.containers[id]
	return ok
}

func (f *fakeRuntime) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeRuntime) started(id string) (runtime.Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.starts[id]
	return s, ok
}

func (f *fakeRuntime) stopTimeout(id string) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.stops[id]
	return d, ok
}

// fakeManager is a pb.WorkerServer on 127.0.0.1. It streams the task
// list set with assign and records every report.
type fakeManager struct {
	pb.UnimplementedWorkerServer

	token string
	addr  string

	mu       sync.Mutex
	tasks    []*pb.Task
	index    uint64
	changed  chan struct{}
	streams  int
	refuse   bool                      // Assignments fails with Unavailable
	failRep  bool                      // Report fails with Unavailable
	assigned bool                      // assign was called: lists are streamed
	sent     []uint64                  // the index of every list streamed
	reports  map[string]*pb.TaskReport // latest report per task
	batches  int
	received map[string]int // reports received per task

	managers []*pb.ManagerAddress // returned by Register
	dnsPort  int32                // from the last Register

	history map[string][]string         // every state reported per task, in order
	all     map[string][]*pb.TaskReport // every report per task, in order

	// The endpoint set streamed by Endpoints, and what came back.
	eps        *pb.EndpointsResponse // nil: nothing streamed yet
	epsChanged chan struct{}
	epsRefuse  bool // Endpoints fails with Unavailable
	epsStreams int
	epsSent    []uint64 // the index of every set streamed
	epsIndexes []uint64 // endpoints_index of every report carrying one
}

func startManager(t *testing.T, token string) *fakeManager {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeManager{
		token:    token,
		addr:     lis.Addr().String(),
		changed:  make(chan struct{}),
		reports:  make(map[string]*pb.TaskReport),
		received: make(map[string]int),
		history:  make(map[string][]string),
		all:      make(map[string][]*pb.TaskReport),

		epsChanged: make(chan struct{}),
	}
	s := grpc.NewServer()
	pb.RegisterWorkerServer(s, m)
	go func() { _ = s.Serve(lis) }() // ends with Stop below
	t.Cleanup(s.Stop)
	return m
}

func (m *fakeManager) Register(_ context.Context,
	req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	if req.GetToken() != m.token {
		return nil, status.Error(codes.PermissionDenied, "invalid join token")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dnsPort = req.GetDnsPort()
	return &pb.RegisterResponse{Managers: m.managers}, nil
}

func (m *fakeManager) Assignments(req *pb.AssignmentsRequest,
	stream grpc.ServerStreamingServer[pb.AssignmentsResponse]) error {
	m.mu.Lock()
	m.streams++
	m.mu.Unlock()
	for {
		m.mu.Lock()
		if m.refuse {
			m.mu.Unlock()
			return status.Error(codes.Unavailable, "no leader")
		}
		resp := &pb.AssignmentsResponse{Index: m.index}
		for _, t := range m.tasks {
			resp.Tasks = append(resp.Tasks, proto.Clone(t).(*pb.Task))
		}
		changed, send := m.changed, m.assigned
		m.mu.Unlock()

		if send {
			if err := stream.Send(resp); err != nil {
				return err
			}
			m.mu.Lock()
			m.sent = append(m.sent, resp.GetIndex())
			m.mu.Unlock()
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (m *fakeManager) Report(_ context.Context,
	req *pb.ReportRequest) (*pb.ReportResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failRep {
		return nil, status.Error(codes.Unavailable, "no leader")
	}
	m.batches++
	for _, r := range req.GetReports() {
		m.reports[r.GetTaskId()] = r
		m.received[r.GetTaskId()]++
		m.all[r.GetTaskId()] = append(m.all[r.GetTaskId()], r)
		h := m.history[r.GetTaskId()]
		if len(h) == 0 || h[len(h)-1] != r.GetState() {
			m.history[r.GetTaskId()] = append(h, r.GetState())
		}
	}
	if i := req.GetEndpointsIndex(); i != 0 {
		m.epsIndexes = append(m.epsIndexes, i)
	}
	return &pb.ReportResponse{}, nil
}

func (m *fakeManager) Endpoints(req *pb.EndpointsRequest,
	stream grpc.ServerStreamingServer[pb.EndpointsResponse]) error {
	m.mu.Lock()
	m.epsStreams++
	m.mu.Unlock()
	for {
		m.mu.Lock()
		if m.epsRefuse {
			m.mu.Unlock()
			return status.Error(codes.Unavailable, "no leader")
		}
		var resp *pb.EndpointsResponse
		if m.eps != nil {
			resp = proto.Clone(m.eps).(*pb.EndpointsResponse)
		}
		changed := m.epsChanged
		m.mu.Unlock()

		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
			m.mu.Lock()
			m.epsSent = append(m.epsSent, resp.GetIndex())
			m.mu.Unlock()
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// setEndpoints streams svcs as the endpoint set at index.
func (m *fakeManager) setEndpoints(index uint64,
	svcs ...*pb.ServiceEndpoints) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.eps = &pb.EndpointsResponse{Index: index, Services: svcs}
	close(m.epsChanged)
	m.epsChanged = make(chan struct{})
}

// setEndpointsRefuse makes Endpoints fail, breaking the open streams,
// or serve again.
func (m *fakeManager) setEndpointsRefuse(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epsRefuse = on
	close(m.epsChanged)
	m.epsChanged = make(chan struct{})
}

// streamedEndpoints is a waitFor condition: a set with index was sent.
func (m *fakeManager) streamedEndpoints(index uint64) func() error {
	return func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if slices.Contains(m.epsSent, index) {
			return nil
		}
		return fmt.Errorf("no endpoint set with index %d streamed; "+
			"sent %v", index, m.epsSent)
	}
}

func (m *fakeManager) endpointStreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epsStreams
}

// reportedIndex is a waitFor condition: at least n reports carried
// endpoints_index index.
func (m *fakeManager) reportedIndex(index uint64, n int) func() error {
	return func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		got := 0
		for _, i := range m.epsIndexes {
			if i == index {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d reports with endpoints index %d, "+
				"want %d; indexes reported %v", got, index, n,
				m.epsIndexes)
		}
		return nil
	}
}

// states returns every state reported for a task, in order.
func (m *fakeManager) states(id string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.history[id]...)
}

// reportsFor returns every report received for a task, in order.
func (m *fakeManager) reportsFor(id string) []*pb.TaskReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*pb.TaskReport(nil), m.all[id]...)
}

// registeredDNSPort is the DNS port of the last Register.
func (m *fakeManager) registeredDNSPort() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.dnsPort)
}

// assign streams tasks as the node's full list. No list is streamed
// before the first call.
func (m *fakeManager) assign(tasks ...*pb.Task) {
	m.mu.Lock()
	next := m.index + 1
	m.mu.Unlock()
	m.assignAt(next, tasks...)
}

// assignAt streams tasks with the given store index, as a manager whose
// replica is at that index would.
func (m *fakeManager) assignAt(index uint64, tasks ...*pb.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tasks = tasks
	m.index = index
	m.assigned = true
	close(m.changed)
	m.changed = make(chan struct{})
}

// setRefuse makes Assignments fail, breaking the open streams, or
// serve again.
func (m *fakeManager) setRefuse(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuse = on
	close(m.changed)
	m.changed = make(chan struct{})
}

// streamed is a waitFor condition: a list with index was sent.
func (m *fakeManager) streamed(index uint64) func() error {
	return func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, i := range m.sent {
			if i == index {
				return nil
			}
		}
		return fmt.Errorf("no list with index %d streamed; sent %v",
			index, m.sent)
	}
}

// failReports makes Report fail.
func (m *fakeManager) failReports() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failRep = true
}

// report returns the latest report of a task.
func (m *fakeManager) report(id string) *pb.TaskReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reports[id]
}

func (m *fakeManager) openStreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams
}

func (m *fakeManager) receivedFor(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.received[id]
}

// hasReport is a waitFor condition on the latest report of a task.
func (m *fakeManager) hasReport(id, state string, healthy bool) func() error {
	return func() error {
		r := m.report(id)
		if r.GetState() != state || r.GetHealthy() != healthy {
			return fmt.Errorf("task %q: report %v, want state %q healthy %v",
				id, r, state, healthy)
		}
		return nil
	}
}

// fakePool stands in for the gossip pool.
type fakePool struct {
	mu     sync.Mutex
	joined []string
	left   bool
}

func (p *fakePool) RetryJoin(_ context.Context, addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.joined = addrs
}

func (p *fakePool) Join(addrs []string) (int, error) {
	return 0, errors.New("fake pool joins nobody")
}

func (p *fakePool) Members() []gossip.Member { return nil }

func (p *fakePool) Changed() <-chan struct{} { return nil }

func (p *fakePool) Leave(time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.left = true
	return nil
}

func (p *fakePool) Shutdown() error { return nil }

// option adjusts a harness and its agent's config before Run.
type option func(*harness, *Config)

// withRealGossip makes startAgent use a real gossip pool on a free port.
func withRealGossip(_ *harness, c *Config) { c.GossipPort = 0 }

// harness is an agent running against a fake manager and runtime.
type harness struct {
	agent *Agent
	rt    *fakeRuntime
	mgr   *fakeManager
	pool  *fakePool
	real  chan *gossip.Pool // the real pool, withRealGossip only
	done  chan error
	stop  context.CancelFunc
}

// startAgent runs an agent with token against a manager expecting
// "secret". rt may hold containers from an earlier run.
func startAgent(t *testing.T, token string, rt *fakeRuntime,
	opts ...option) *harness {
	t.Helper()
	h := &harness{rt: rt, mgr: startManager(t, "secret"), pool: &fakePool{},
		real: make(chan *gossip.Pool, 1)}

	cfg := DefaultConfig()
	cfg.Name = "w1"
	cfg.DataDir = t.TempDir()
	cfg.Join = []string{h.mgr.addr}
	cfg.Token = token
	cfg.Runtime = rt
	cfg.Logger = testutil.Logger(t, hclog.Debug)
	cfg.ReportInterval = time.Hour
	cfg.DNSPort = 0 // a free port: tests run side by side
	for _, o := range opts {
		o(h, &cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GossipPort != 0 {
		a.newPool = func(gossip.Config) (pool, error) { return h.pool, nil }
	} else {
		a.newPool = func(c gossip.Config) (pool, error) {
			p, err := gossip.New(c)
			if err == nil {
				h.real <- p
			}
			return p, err
		}
	}
	h.agent = a

	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil && !errors.Is(err, ErrJoinRefused) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return h
}

// task builds a task with desired "run" on node w1.
func task(id string) *pb.Task {
	return &pb.Task{
		Id: id, App: "web", Version: 3, Node: "w1",
		Address: "127.0.0.1", Desired: pb.DesiredRun,
		Spec: &pb.AppSpec{Name: "web", Image: "registry.test/web:v3"},
	}
}
