package rpc

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// openStreams opens node's assignment and endpoint streams at m and
// returns a receive function for each, by name.
func openStreams(t *testing.T, m *testManager, node string) map[string]func() (uint64, uint64, error) {
	t.Helper()
	ctx := ctxT(t)
	assign, err := m.worker.Assignments(ctx, &pb.AssignmentsRequest{Node: node})
	if err != nil {
		t.Fatalf("assignments: %v", err)
	}
	eps, err := m.worker.Endpoints(ctx, &pb.EndpointsRequest{Node: node})
	if err != nil {
		t.Fatalf("endpoints: %v", err)
	}
	return map[string]func() (uint64, uint64, error){
		"assignments": func() (uint64, uint64, error) {
			resp, err := assign.Recv()
			return resp.GetRestoreEpoch(), resp.GetIndex(), err
		},
		"endpoints": func() (uint64, uint64, error) {
			resp, err := eps.Recv()
			return resp.GetRestoreEpoch(), resp.GetIndex(), err
		},
	}
}

// A manager's lists are the whole truth for a worker, so it serves them
// only to a worker its replica knows; any other node is refused with
// NotFound and gets no list at all, not even an empty one.
func TestStreamsRefuseUnknownWorker(t *testing.T) {
	m := startManager(t, "m1", true)
	for _, tc := range []struct {
		name, node, want string
	}{
		{name: "unknown", node: "w9", want: `node "w9": not a node`},
		{name: "manager", node: "m1", want: `node "m1": not a worker`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for stream, recv := range openStreams(t, m, tc.node) {
				_, _, err := recv()
				t.Logf("%s: %v", stream, err)
				wantCode(t, err, codes.NotFound, tc.want)
			}
		})
	}

	// A worker registered on the leader may not be applied on this
	// replica yet: refused until it is, then served.
	t.Run("known-later", func(t *testing.T) {
		m.addWorker(t, "w9")
		for stream, recv := range openStreams(t, m, "w9") {
			if _, _, err := recv(); err != nil {
				t.Errorf("%s after the registration applied: %v", stream, err)
			}
		}
	})
}

// Disaster recovery at the seam of rpc: a new cluster (its own ID,
// tokens and a short log) does not know the worker and refuses its
// streams; once the backup is restored it serves the restored lists,
// with a restore epoch that orders them after anything the worker saw,
// also when the lost cluster had been through a restore after the
// backup was taken. A restore whose state lacks a worker ends that
// worker's streams.
func TestStreamsAfterDisasterRestore(t *testing.T) {
	// The old cluster: w1 with a task, and a log well past the new one's.
	old := startManager(t, "m1", true, func(c *Config) {
		c.Raft = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
	})
	old.addWorker(t, "w1")
	old.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{{Id: "saved",
		App: "web", Version: 1, Node: "w1", Desired: pb.DesiredRun,
		State: pb.TaskRunning}}})
	for range 10 {
		old.raft.mustApply(t, fsm.SetMetaType, &pb.SetMetaCmd{Meta: old.srv.store.Meta()})
	}
	backup := getSnapshot(t, old)
	// After the backup, a restore into the old cluster: its workers saw
	// this epoch before every manager was lost.
	if status, body := postSnapshot(t, old.srv.HTTPAddr(), backup); status != http.StatusOK {
		t.Fatalf("restore into the old cluster: status %d: %s", status, body)
	}
	seen := old.srv.store.Meta().GetRestoreEpoch()
	if seen == 0 {
		t.Fatal("restore epoch 0 after a restore into the old cluster")
	}

	// The new cluster on the same name, with its own identity, started
	// after the old one's restore.
	m := startManager(t, "m1", true, func(c *Config) {
		c.Raft = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
		c.Now = func() time.Time { return time.Unix(2000, 0) }
	})
	m.raft.mustApply(t, fsm.SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{
		ClusterId: "c2", WorkerToken: "new-worker-secret"}})
	for stream, recv := range openStreams(t, m, "w1") {
		_, _, err := recv()
		wantCode(t, err, codes.NotFound, `node "w1"`)
		t.Logf("%s before the restore: %v", stream, err)
	}

	if status, body := postSnapshot(t, m.srv.HTTPAddr(), backup); status != http.StatusOK {
		t.Fatalf("restore: status %d: %s", status, body)
	}
	streams := openStreams(t, m, "w1")
	for stream, recv := range streams {
		epoch, index, err := recv()
		if err != nil {
			t.Fatalf("%s after the restore: %v", stream, err)
		}
		if epoch <= seen {
			t.Errorf("%s after the restore: restore epoch %d (index %d), not past %d "+
				"of the old cluster's restore: the worker would ignore it",
				stream, epoch, index, seen)
		}
	}
	if got := m.srv.store.Meta().GetClusterId(); got != "c1" {
		t.Errorf("cluster ID after the restore %q, want the backup's c1", got)
	}

	// A restore of a state without w1 ends its open streams.
	other := startManager(t, "m1", true)
	if status, body := postSnapshot(t, m.srv.HTTPAddr(), getSnapshot(t, other)); status != http.StatusOK {
		t.Fatalf("second restore: status %d: %s", status, body)
	}
	for stream, recv := range streams {
		for {
			_, _, err := recv()
			if err == nil {
				continue // a list sent before the restore applied
			}
			wantCode(t, err, codes.NotFound, `node "w1"`)
			t.Logf("%s after a restore without w1: %v", stream, err)
			break
		}
	}
}

// A restore installs the file's state, whose restore epoch and index
// may be below what a worker saw, and then commits the entry with the
// new epoch. A stream opened in between sends the installed
// state, which the worker ignores as older than its last list; the
// entry with the new epoch must then go out even though the node's
// tasks and the endpoint set did not change, or the worker keeps
// running what the restored state does not list.
func TestStreamsSendNewRestoreCount(t *testing.T) {
	old := startManager(t, "m1", true)
	old.addWorker(t, "w1")
	old.raft.mustApply(t, fsm.PlanType, &pb.PlanCmd{Create: []*pb.Task{{Id: "saved",
		App: "web", Version: 1, Node: "w1", Desired: pb.DesiredRun,
		State: pb.TaskRunning}}})
	backup := getSnapshot(t, old)

	var rr *restoreRaft
	m := startManager(t, "m1", true, func(c *Config) {
		rr = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
		c.Raft = rr
	})
	if err := rr.Restore(ctxT(t), bytes.NewReader(backup), int64(len(backup))); err != nil {
		t.Fatal(err)
	}
	installed := m.srv.store.Meta().GetRestoreEpoch()
	streams := openStreams(t, m, "w1")
	for stream, recv := range streams {
		epoch, index, err := recv()
		if err != nil {
			t.Fatalf("%s on the installed state: %v", stream, err)
		}
		t.Logf("%s on the installed state: restore epoch %d, index %d", stream, epoch, index)
	}

	meta := proto.Clone(m.srv.store.Meta()).(*pb.ClusterMeta)
	meta.RestoreEpoch = installed + 1
	m.raft.mustApply(t, fsm.SetMetaType, &pb.SetMetaCmd{Meta: meta})
	for stream, recv := range streams {
		type result struct {
			epoch, index uint64
			err          error
		}
		got := make(chan result, 1)
		go func() {
			epoch, index, err := recv()
			got <- result{epoch, index, err}
		}()
		select {
		case r := <-got:
			if r.err != nil || r.epoch != installed+1 {
				t.Errorf("%s after the new epoch: restore epoch %d, index %d (%v), want %d",
					stream, r.epoch, r.index, r.err, installed+1)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s sent nothing within 5s of the entry with the new epoch", stream)
		}
	}
}

// getSnapshot is m's state as GET /v1/snapshot serves it.
func getSnapshot(t *testing.T, m *testManager) []byte {
	t.Helper()
	resp, err := http.Get("http://" + m.srv.HTTPAddr() + "/v1/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/snapshot: status %d, %v", resp.StatusCode, err)
	}
	return b
}
