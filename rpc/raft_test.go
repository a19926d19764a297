package rpc

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// memberRaft adds membership changes to fakeRaft: a removal drops the
// server from the configuration, a transfer makes the target leader.
type memberRaft struct {
	*fakeRaft

	mu          sync.Mutex
	removed     []string
	transferred []string
}

func (r *memberRaft) RemoveServer(name string) error {
	r.mu.Lock()
	r.removed = append(r.removed, name)
	r.mu.Unlock()
	r.set(func(f *fakeRaft) {
		f.servers = slices.DeleteFunc(slices.Clone(f.servers),
			func(s raftnode.Server) bool { return s.Name == name })
	})
	return nil
}

func (r *memberRaft) TransferLeadership(name string) error {
	r.mu.Lock()
	r.transferred = append(r.transferred, name)
	r.mu.Unlock()
	r.set(func(f *fakeRaft) {
		f.leader, f.leaderName = false, name
		f.stats.State = "follower"
	})
	return nil
}

func (r *memberRaft) calls() (removed, transferred []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.removed), slices.Clone(r.transferred)
}

// raftFixture is leader m1 (with membership changes) and follower m2,
// which knows where m1 is. The configuration also holds m3, a voter
// that does not answer, and m4, a non-voter.
func raftFixture(t *testing.T) (m1, m2 *testManager, mr *memberRaft) {
	t.Helper()
	m1 = startManager(t, "m1", true, func(c *Config) {
		mr = &memberRaft{fakeRaft: c.Raft.(*fakeRaft)}
		c.Raft = mr
	})
	m2 = startManager(t, "m2", false)
	servers := []raftnode.Server{
		{Name: "m1", Address: "10.0.0.1:7072", Voter: true},
		{Name: "m2", Address: "10.0.0.2:7072", Voter: true},
		{Name: "m3", Address: "10.0.0.3:7072", Voter: true},
		{Name: "m4", Address: "10.0.0.4:7072", Voter: false},
	}
	for _, m := range []*testManager{m1, m2} {
		m.raft.set(func(r *fakeRaft) {
			r.servers = servers
			r.leaderName = "m1"
		})
	}
	m2.raft.set(func(r *fakeRaft) { r.stats.AppliedIndex = 7 })
	m1.addManager(t, m2)
	m2.addManager(t, m1)
	return m1, m2, mr
}

func TestRemovePeer(t *testing.T) {
	m1, m2, mr := raftFixture(t)

	refused := []struct {
		name      string
		peer      string
		code      codes.Code
		fragments []string
	}{
		{"no name", "", codes.InvalidArgument, []string{"name"}},
		{"unknown peer", "m9", codes.NotFound, []string{`"m9"`}},
		{"the leader", "m1", codes.FailedPrecondition, []string{`"m1"`, "transfer leadership first"}},
		// m1 and m3 would be left, m3 dead: no quorum until it is back.
		{"a live voter while another is dead", "m2", codes.FailedPrecondition,
			[]string{`"m2"`, "2 voters of which 1 answer", "remove m3 first"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m1.ctl.RemovePeer(ctxT(t), &pb.RemovePeerRequest{Name: tc.peer})
			wantCode(t, err, tc.code, tc.fragments...)
			if removed, _ := mr.calls(); len(removed) != 0 {
				t.Errorf("removed %v after a refused request", removed)
			}
		})
	}

	t.Run("dead voter, on the leader", func(t *testing.T) {
		if _, err := m1.ctl.RemovePeer(ctxT(t), &pb.RemovePeerRequest{Name: "m3"}); err != nil {
			t.Fatalf("remove m3: %v", err)
		}
		if removed, _ := mr.calls(); strings.Join(removed, ",") != "m3" {
			t.Errorf("removed %v, want m3", removed)
		}
	})

	t.Run("non-voter, through a follower", func(t *testing.T) {
		if _, err := m2.ctl.RemovePeer(ctxT(t), &pb.RemovePeerRequest{Name: "m4"}); err != nil {
			t.Fatalf("remove m4 via m2: %v", err)
		}
		if removed, _ := mr.calls(); strings.Join(removed, ",") != "m3,m4" {
			t.Errorf("removed %v, want m3,m4", removed)
		}
	})

	t.Run("over HTTP", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodDelete,
			"http://"+m1.srv.HTTPAddr()+"/v1/raft/peers/m2", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("DELETE: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE /v1/raft/peers/m2: http %d", resp.StatusCode)
		}
		if removed, _ := mr.calls(); strings.Join(removed, ",") != "m3,m4,m2" {
			t.Errorf("removed %v, want m3,m4,m2", removed)
		}
	})
}

func TestRemovePeerUnsupported(t *testing.T) {
	m := startManager(t, "m1", true)
	m.raft.set(func(r *fakeRaft) {
		r.servers = []raftnode.Server{{Name: "m1", Voter: true}, {Name: "m2", Voter: true}}
	})
	_, err := m.ctl.RemovePeer(ctxT(t), &pb.RemovePeerRequest{Name: "m2"})
	wantCode(t, err, codes.Unimplemented)
}

func TestTransferLeadership(t *testing.T) {
	refused := []struct {
		name      string
		target    string
		code      codes.Code
		fragments []string
	}{
		{"unknown peer", "m9", codes.NotFound, []string{`"m9"`}},
		{"itself", "m1", codes.FailedPrecondition, []string{"already the leader"}},
		{"non-voter", "m4", codes.FailedPrecondition, []string{`"m4"`, "not a voter"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			m1, _, mr := raftFixture(t)
			_, err := m1.ctl.TransferLeadership(ctxT(t),
				&pb.TransferLeadershipRequest{Name: tc.target})
			wantCode(t, err, tc.code, tc.fragments...)
			if _, moved := mr.calls(); len(moved) != 0 {
				t.Errorf("transferred to %v after a refused request", moved)
			}
		})
	}

	done := []struct {
		name   string
		via    func(m1, m2 *testManager) pb.ControlClient
		target string
	}{
		{"named voter", func(m1, _ *testManager) pb.ControlClient { return m1.ctl }, "m2"},
		// m3 does not answer and m4 does not vote: only m2 qualifies.
		{"any voter", func(m1, _ *testManager) pb.ControlClient { return m1.ctl }, ""},
		{"through a follower", func(_, m2 *testManager) pb.ControlClient { return m2.ctl }, "m2"},
	}
	for _, tc := range done {
		t.Run(tc.name, func(t *testing.T) {
			m1, m2, mr := raftFixture(t)
			resp, err := tc.via(m1, m2).TransferLeadership(ctxT(t),
				&pb.TransferLeadershipRequest{Name: tc.target})
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			if _, moved := mr.calls(); strings.Join(moved, ",") != "m2" {
				t.Errorf("transferred to %v, want m2", moved)
			}
			if resp.GetLeader() != "m2" {
				t.Errorf("new leader %q, want m2", resp.GetLeader())
			}
		})
	}
}

func TestTransferLeadershipNoOtherVoter(t *testing.T) {
	m1, _, mr := raftFixture(t)
	mr.set(func(r *fakeRaft) {
		r.servers = []raftnode.Server{{Name: "m1", Voter: true}, {Name: "m3", Voter: true}}
	})
	_, err := m1.ctl.TransferLeadership(ctxT(t), &pb.TransferLeadershipRequest{})
	wantCode(t, err, codes.FailedPrecondition, "no other reachable voter")
}
