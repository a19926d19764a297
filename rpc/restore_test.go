package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// restoreRaft adds Restore to fakeRaft: it restores the fake's own FSM,
// as Raft's user restore does on every replica.
type restoreRaft struct {
	*fakeRaft

	mu    sync.Mutex
	sizes []int64

	// gate, when set, runs first in every Restore: a restore that
	// takes long.
	gate func()
}

func (r *restoreRaft) Restore(_ context.Context, rd io.Reader, size int64) error {
	if r.gate != nil {
		r.gate()
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.sizes = append(r.sizes, size)
	r.mu.Unlock()
	r.fakeRaft.mu.Lock()
	defer r.fakeRaft.mu.Unlock()
	return r.fsm.Restore(io.NopCloser(bytes.NewReader(b)))
}

func (r *restoreRaft) calls() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.sizes...)
}

// followerOf starts m2, a follower that knows leader m1's HTTP address,
// so that it forwards restores there.
func followerOf(t *testing.T, m1 *testManager) *testManager {
	t.Helper()
	m2 := startManager(t, "m2", false)
	m2.raft.set(func(r *fakeRaft) { r.leaderName = "m1" })
	host, port, _ := net.SplitHostPort(m1.srv.HTTPAddr())
	hp, _ := strconv.Atoi(port)
	m2.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name: "m1", Role: pb.RoleManager, Address: host, HttpPort: int32(hp),
		RpcPort: 1, Status: pb.NodeReady,
	}})
	return m2
}

// postSnapshot POSTs body to addr's /v1/snapshot.
func postSnapshot(t *testing.T, addr string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost,
		"http://"+addr+"/v1/snapshot", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/snapshot at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestRestoreRoute(t *testing.T) {
	// The snapshot: a manager with app "web" deployed, saved over HTTP.
	src := startManager(t, "src", true)
	if _, err := src.ctl.DeployApp(ctxT(t), &pb.DeployAppRequest{Spec: webSpec()}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	resp, err := http.Get("http://" + src.srv.HTTPAddr() + "/v1/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	snapshot, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/snapshot: status %d, %v", resp.StatusCode, err)
	}

	// Leader m1 restores; follower m2 knows m1's HTTP address.
	var rr *restoreRaft
	m1 := startManager(t, "m1", true, func(c *Config) {
		rr = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
		c.Raft = rr
	})
	m2 := followerOf(t, m1)
	// A leader without Restorer.
	plain := startManager(t, "plain", true)
	// A snapshot a restore cannot read, though its summary reads: Raft
	// would stop the leader if its state machine failed to restore it.
	tamperedPath := filepath.Join(t.TempDir(), "tampered.db")
	if err := os.WriteFile(tamperedPath, snapshot, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.ExecSQLite(t, tamperedPath, "UPDATE apps SET json = '{not json'")
	tampered, err := os.ReadFile(tamperedPath)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		at       *testManager
		body     []byte
		status   int
		fragment string
		restores int
		appInM1  bool
	}{
		{"non-snapshot refused", m1, []byte("not a database at all"),
			http.StatusBadRequest, "not a hivemind snapshot", 0, false},
		{"empty body refused", m2, nil,
			http.StatusBadRequest, "not a hivemind snapshot", 0, false},
		{"unreadable row refused", m1, tampered,
			http.StatusBadRequest, "read apps: invalid", 0, false},
		{"unreadable row refused by a follower", m2, tampered,
			http.StatusBadRequest, "read apps: invalid", 0, false},
		{"no restorer", plain, snapshot,
			http.StatusNotImplemented, "not supported", 0, false},
		{"follower forwards to the leader", m2, snapshot,
			http.StatusOK, `"apps":1`, 1, true},
		{"leader restores", m1, snapshot,
			http.StatusOK, `"apps":1`, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postSnapshot(t, tc.at.srv.HTTPAddr(), tc.body)
			if status != tc.status || !strings.Contains(string(body), tc.fragment) {
				t.Fatalf("status %d body %s, want %d with %q", status, body, tc.status, tc.fragment)
			}
			if status != http.StatusOK {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Code == 0 {
					t.Errorf("error body %s: want JSON {code, message} (%v)", body, err)
				}
			}
			if got := len(rr.calls()); got != tc.restores {
				t.Errorf("leader restored %d times, want %d", got, tc.restores)
			}
			if got := m1.srv.store.App("web") != nil; got != tc.appInM1 {
				t.Errorf("app web in m1's state: %t, want %t", got, tc.appInM1)
			}
		})
	}
	if sizes := rr.calls(); len(sizes) > 0 && sizes[0] != int64(len(snapshot)) {
		t.Errorf("restore size %d, want %d", sizes[0], len(snapshot))
	}
	// The restored meta is the snapshot's, committed again past the
	// restored index.
	if got := m1.srv.store.Meta().GetClusterId(); got != "c1" {
		t.Errorf("cluster id after restore %q, want c1", got)
	}
}

// After a restore the replica's index goes back to the snapshot's; the
// worker ignores a list older than one it applied, so the stream must
// send the restored tasks only with the index the restore commits next.
func TestAssignmentsAfterRestore(t *testing.T) {
	plan := func(id string) *pb.PlanCmd {
		return &pb.PlanCmd{Create: []*pb.Task{{Id: id, App: "web", Version: 1,
			Node: "w1", Desired: pb.DesiredRun, State: pb.TaskRunning}}}
	}
	src := startManager(t, "src", true)
	src.addWorker(t, "w1")
	src.raft.mustApply(t, fsm.PlanType, plan("saved"))
	resp, err := http.Get("http://" + src.srv.HTTPAddr() + "/v1/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	snapshot, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/snapshot: status %d, %v", resp.StatusCode, err)
	}

	m := startManager(t, "m1", true, func(c *Config) {
		c.Raft = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
	})
	m.addWorker(t, "w1")
	m.raft.mustApply(t, fsm.PlanType, plan("later"))
	for range 5 { // move the index well past the snapshot's
		m.raft.mustApply(t, fsm.SetMetaType, &pb.SetMetaCmd{Meta: m.srv.store.Meta()})
	}

	stream, err := m.worker.Assignments(ctxT(t), &pb.AssignmentsRequest{Node: "w1"})
	if err != nil {
		t.Fatalf("assignments: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if len(first.Tasks) != 1 || first.Tasks[0].Id != "later" {
		t.Fatalf("first list %v, want the task later", first.Tasks)
	}

	if status, body := postSnapshot(t, m.srv.HTTPAddr(), snapshot); status != http.StatusOK {
		t.Fatalf("restore: status %d: %s", status, body)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if next.Index <= first.Index {
		t.Errorf("list after restore has index %d, not past %d: the worker would ignore it",
			next.Index, first.Index)
	}
	if len(next.Tasks) != 1 || next.Tasks[0].Id != "saved" {
		t.Errorf("list after restore %v, want the restored task saved", next.Tasks)
	}
}

// Restores sent at once run one after the other on the leader, each with
// its own epoch.
func TestConcurrentRestores(t *testing.T) {
	src := startManager(t, "src", true)
	snapshot := getSnapshot(t, src)
	m := startManager(t, "m1", true, func(c *Config) {
		c.Raft = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft)}
	})

	const n = 3
	statuses := make(chan int, n)
	for range n {
		go func() {
			// Not postSnapshot: it may not fail the test from here.
			resp, err := http.Post("http://"+m.srv.HTTPAddr()+"/v1/snapshot",
				"application/octet-stream", bytes.NewReader(snapshot))
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	for range n {
		if status := <-statuses; status != http.StatusOK {
			t.Errorf("a concurrent restore answered %d", status)
		}
	}
	// The test clock stands still: each restore is one past the last.
	want := uint64(time.Unix(1000, 0).UnixNano()) + n - 1
	if got := m.srv.store.Meta().GetRestoreEpoch(); got != want {
		t.Errorf("restore epoch %d after %d restores, want %d", got, n, want)
	}
}

// A restore a follower forwards ends as soon as the follower knows
// another leader, as a forwarded call does, instead of waiting on a
// leader that may be cut off.
func TestForwardedRestoreEndsWhenLeaderMoves(t *testing.T) {
	src := startManager(t, "src", true)
	snapshot := getSnapshot(t, src)

	release := make(chan struct{})
	defer close(release)
	reached := make(chan struct{})
	var once sync.Once
	m1 := startManager(t, "m1", true, func(c *Config) {
		c.Raft = &restoreRaft{fakeRaft: c.Raft.(*fakeRaft), gate: func() {
			once.Do(func() { close(reached) })
			<-release
		}}
	})
	m2 := followerOf(t, m1)

	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.Post("http://"+m2.srv.HTTPAddr()+"/v1/snapshot",
			"application/octet-stream", bytes.NewReader(snapshot))
		if err != nil {
			answers <- answer{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answers <- answer{resp.StatusCode, string(b)}
	}()
	select {
	case <-reached:
	case a := <-answers:
		t.Fatalf("restore answered %d %s before reaching the leader", a.status, a.body)
	case <-time.After(testTimeout):
		t.Fatal("the forwarded restore never reached the leader")
	}
	m2.raft.set(func(r *fakeRaft) { r.leaderName = "m3" })
	select {
	case a := <-answers:
		if a.status != http.StatusBadGateway || !strings.Contains(a.body, "leadership moved") ||
			!strings.Contains(a.body, "may or may not") {
			t.Fatalf("answer %d %s, want 502 saying leadership moved", a.status, a.body)
		}
	case <-time.After(testTimeout):
		t.Fatal("the forwarded restore still waits on the old leader")
	}
}
