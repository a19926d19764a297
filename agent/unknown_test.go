package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// newClusterManager is a fakeManager whose streams can refuse the node as
// unknown, as a manager of a new cluster does before the backup is
// restored into it, and that streams lists with a restore epoch. Its
// Assignments also fails with Unavailable while the fakeManager's refuse
// is set. Its own fields are guarded by the fakeManager's mutex.
type newClusterManager struct {
	*fakeManager

	listen string // its gRPC address

	unknown bool
	epoch   uint64
}

// withNewClusterManager serves h.mgr through a newClusterManager and
// makes the agent join that one.
func withNewClusterManager(t *testing.T, out **newClusterManager) option {
	return func(h *harness, c *Config) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := &newClusterManager{fakeManager: h.mgr}
		s := grpc.NewServer()
		pb.RegisterWorkerServer(s, m)
		go func() { _ = s.Serve(lis) }() // ends with Stop below
		t.Cleanup(s.Stop)
		c.Join = []string{lis.Addr().String()}
		m.listen = lis.Addr().String()
		*out = m
	}
}

// addr is the manager's gRPC address.
func (m *newClusterManager) listenAddr() string { return m.listen }

func (m *newClusterManager) refused(node string) error {
	return status.Errorf(codes.NotFound,
		"node %q: not a node of this cluster's state", node)
}

func (m *newClusterManager) Assignments(req *pb.AssignmentsRequest,
	stream grpc.ServerStreamingServer[pb.AssignmentsResponse]) error {
	m.mu.Lock()
	m.streams++
	m.mu.Unlock()
	for {
		m.mu.Lock()
		if m.refuse {
			m.mu.Unlock()
			return status.Error(codes.Unavailable, "manager going away")
		}
		if m.unknown {
			m.mu.Unlock()
			return m.refused(req.GetNode())
		}
		resp := &pb.AssignmentsResponse{Index: m.index, RestoreEpoch: m.epoch}
		for _, t := range m.tasks {
			resp.Tasks = append(resp.Tasks, proto.Clone(t).(*pb.Task))
		}
		changed, send := m.changed, m.assigned
		m.mu.Unlock()

		if send {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (m *newClusterManager) Endpoints(req *pb.EndpointsRequest,
	stream grpc.ServerStreamingServer[pb.EndpointsResponse]) error {
	m.mu.Lock()
	m.epsStreams++
	m.mu.Unlock()
	for {
		m.mu.Lock()
		if m.unknown {
			m.mu.Unlock()
			return m.refused(req.GetNode())
		}
		resp := &pb.EndpointsResponse{Index: m.index, RestoreEpoch: m.epoch}
		changed := m.changed
		m.mu.Unlock()

		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// become switches the manager to a new state: unknown refuses the node;
// otherwise tasks are its list at (epoch, index). Open streams break
// or get the new list.
func (m *newClusterManager) become(unknown bool, epoch, index uint64,
	tasks ...*pb.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unknown, m.epoch = unknown, epoch
	m.tasks, m.index, m.assigned = tasks, index, true
	close(m.changed)
	m.changed = make(chan struct{})
}

// streamsOpened counts the assignment and endpoint streams opened.
func (m *newClusterManager) streamsOpened() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams + m.epsStreams
}

// Disaster recovery, seen from a worker that kept running while every
// manager was lost: the new cluster on the same addresses does not know
// it and refuses its streams, whatever its state's index; the worker
// keeps every container and keeps asking. Once the backup is restored,
// the restored list (one restore later, at an index below the one the
// worker saw) is applied: the task of the backup is kept, not restarted,
// and the container of a task made after the backup is stopped.
func TestUnknownNodeKeepsContainersUntilRestore(t *testing.T) {
	rt := newFakeRuntime()
	var m *newClusterManager
	h := startAgent(t, "secret", rt, withNewClusterManager(t, &m))

	// The old cluster: two tasks, at a high index.
	kept, late := task("kept"), task("late")
	m.become(false, 0, 500, kept, late)
	testutil.WaitFor(t, wait, h.mgr.hasReport("kept", pb.TaskRunning, true))
	testutil.WaitFor(t, wait, h.mgr.hasReport("late", pb.TaskRunning, true))

	// Every manager lost; the new cluster, further on in its own log
	// than the worker's last list, knows nothing of the worker.
	m.become(true, 0, 900)
	opened := m.streamsOpened()
	testutil.WaitFor(t, wait, func() error {
		if n := m.streamsOpened() - opened; n < 6 {
			return fmt.Errorf("%d streams retried while the node is unknown, "+
				"want 6", n)
		}
		return nil
	})
	for _, id := range []string{"kept", "late"} {
		if !rt.has(id) || rt.called("stop "+id) || rt.called("remove "+id) {
			t.Fatalf("container %s touched while the managers did not know "+
				"the node: calls %v", id, rt.callList())
		}
	}

	// The backup restored: it has kept and not late.
	m.become(false, 1, 40, kept)
	testutil.WaitFor(t, wait, func() error {
		if rt.has("late") {
			return fmt.Errorf("container late, made after the backup, "+
				"still there; calls %v", rt.callList())
		}
		return nil
	})
	if !rt.has("kept") || rt.called("stop kept") ||
		count(rt.callList(), "start kept") != 1 {
		t.Errorf("task kept restarted or stopped by the restore: calls %v",
			rt.callList())
	}
}

// startPoolFor starts the gossip pool of a manager called name on port
// (0: a free one), advertising rpcAddr as its gRPC address.
func startPoolFor(t *testing.T, name, rpcAddr string, port int) *gossip.Pool {
	t.Helper()
	_, p, _ := net.SplitHostPort(rpcAddr)
	rpcPort, _ := strconv.Atoi(p)
	mp, err := gossip.New(gossip.Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Port:     port,
		Meta: gossip.Meta{Role: pb.RoleManager, Name: name,
			Address: "127.0.0.1", RPCPort: rpcPort},
		Logger: testutil.Logger(t, hclog.Debug).Named(name),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Shutdown() })
	return mp
}

// A new cluster's manager on the old one's address and name answers the
// pings of the worker's pool, which then never sees it go, and its own
// pool does not know the worker: nothing but a rejoin merges them. The
// worker refused as unknown asks for one, so that once the backup is
// restored the leader sees it alive in gossip and does not call it down.
func TestUnknownNodeRejoinsGossip(t *testing.T) {
	var m *newClusterManager
	var first *gossip.Pool
	h := startAgent(t, "secret", newFakeRuntime(), withRealGossip,
		withNewClusterManager(t, &m), func(h *harness, c *Config) {
			first = startPoolFor(t, "m1", c.Join[0], 0)
			_, p, _ := net.SplitHostPort(c.Join[0])
			rpcPort, _ := strconv.Atoi(p)
			h.mgr.managers = []*pb.ManagerAddress{{Name: "m1",
				Address: "127.0.0.1", RpcPort: int32(rpcPort),
				GossipPort: int32(first.Port())}}
		})
	wp := <-h.real
	testutil.WaitFor(t, wait, managerAlive(wp, true))
	m.become(false, 0, 500, task("t1"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
	// Past the few gossip rounds in which the worker re-sends its own
	// join, which would otherwise introduce it to the new pool.
	testutil.WaitFor(t, wait, aliveFor(wp, time.Second))

	// Every manager lost; the new one comes up on the same address
	// before the worker's pool has called the old one dead.
	if err := first.Shutdown(); err != nil {
		t.Fatal(err)
	}
	second := startPoolFor(t, "m1", m.listenAddr(), first.Port())
	m.become(true, 0, 900)
	testutil.WaitFor(t, wait, seesWorker(second, 0))

	// The new cluster's manager restarts in turn: its stream breaks, and
	// the refusals that follow start a new run, which rejoins at once
	// rather than unknownRejoinEvery after the last rejoin.
	testutil.WaitFor(t, wait, seesWorker(second, time.Second))
	n := m.streamsOpened()
	m.setRefuse(true) // Unavailable, as a manager going away
	testutil.WaitFor(t, wait, func() error {
		if m.streamsOpened() < n+2 {
			return errors.New("streams not refused as unavailable yet")
		}
		return nil
	})
	if err := second.Shutdown(); err != nil {
		t.Fatal(err)
	}
	third := startPoolFor(t, "m1", m.listenAddr(), first.Port())
	m.setRefuse(false)
	testutil.WaitFor(t, wait, seesWorker(third, 0))
}

// seesWorker is a waitFor condition: p has seen w1 alive for d.
func seesWorker(p *gossip.Pool, d time.Duration) func() error {
	return func() error {
		for _, mem := range p.Members() {
			if mem.Meta.Name == "w1" && mem.Alive && time.Since(mem.Since) >= d {
				return nil
			}
		}
		return fmt.Errorf("the new cluster's manager has not seen w1 "+
			"alive in gossip for %s: %+v", d, p.Members())
	}
}
