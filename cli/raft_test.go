package cli

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func peersStatus() *pb.ClusterStatusResponse {
	return &pb.ClusterStatusResponse{
		Leader: "m1",
		Managers: []*pb.ManagerStatus{
			{Name: "m1", Address: "127.0.0.1:7072", State: "leader", Voter: true,
				Term: 3, AppliedIndex: 40, LastIndex: 41,
				EngineEnabled: true, EngineSteps: 120, EngineProposals: 14},
			{Name: "m2", Address: "127.0.0.2:7072", State: "follower", Voter: true,
				Term: 3, AppliedIndex: 39, LastIndex: 41, LastContact: int64(25 * time.Millisecond),
				EngineSteps: 31, EngineProposals: 5},
			{Name: "m3", Address: "127.0.0.3:7072", State: "unreachable", Voter: true},
		},
	}
}

func TestRaftPeers(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("GET /v1/cluster/status", peersStatus())

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "raft", "peers", "--addr", g.srv.URL, "-o", "json")
		if err != nil {
			t.Fatalf("raft peers: %v", err)
		}
		jsonEq(t, out, `[
		 {"name":"m1","address":"127.0.0.1:7072","state":"leader","voter":true,"leader":true,
		  "term":3,"last_contact_ns":0,"applied_index":40,"last_index":41,
		  "engine_enabled":true,"engine_steps":120,"engine_proposals":14},
		 {"name":"m2","address":"127.0.0.2:7072","state":"follower","voter":true,"leader":false,
		  "term":3,"last_contact_ns":25000000,"applied_index":39,"last_index":41,
		  "engine_enabled":false,"engine_steps":31,"engine_proposals":5},
		 {"name":"m3","address":"127.0.0.3:7072","state":"unreachable","voter":true,"leader":false,
		  "term":0,"last_contact_ns":0,"applied_index":0,"last_index":0,
		  "engine_enabled":false,"engine_steps":0,"engine_proposals":0}]`)
	})

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "raft", "peers", "--addr", g.srv.URL)
		if err != nil {
			t.Fatalf("raft peers: %v", err)
		}
		want := []string{
			"NAME  ADDRESS         STATE        VOTER  LAST CONTACT  APPLIED  LAST INDEX  ENGINE  STEPS  PROPOSALS",
			"m1    127.0.0.1:7072  leader       true   -             40       41          on      120    14",
			"m2    127.0.0.2:7072  follower     true   25ms          39       41          off     31     5",
			"m3    127.0.0.3:7072  unreachable  true   -             -        -           -       -      -",
		}
		got := strings.Split(strings.TrimRight(out, "\n"), "\n")
		for i := range got {
			got[i] = strings.TrimRight(got[i], " ")
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("table:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
		}
	})
}

func TestRaftRemovePeer(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("DELETE /v1/raft/peers/m3", &pb.RemovePeerResponse{})
	g.err("DELETE /v1/raft/peers/m1", http.StatusBadRequest, 9,
		`raft peer "m1" is the leader: transfer leadership first`)

	out, err := run(t, "raft", "remove-peer", "--addr", g.srv.URL, "m3")
	if err != nil {
		t.Fatalf("remove-peer m3: %v", err)
	}
	if out != "raft peer \"m3\" removed\n" {
		t.Errorf("output %q", out)
	}

	out, err = run(t, "raft", "remove-peer", "m3", "--addr", g.srv.URL, "-o", "json")
	if err != nil {
		t.Fatalf("remove-peer m3 -o json: %v", err)
	}
	jsonEq(t, out, `{"removed":"m3"}`)

	_, err = run(t, "raft", "remove-peer", "--addr", g.srv.URL, "m1")
	if err == nil || !strings.Contains(err.Error(), "transfer leadership first") {
		t.Errorf("remove-peer m1: %v, want the manager's refusal", err)
	}

	if _, err := run(t, "raft", "remove-peer", "--addr", g.srv.URL); err == nil {
		t.Errorf("remove-peer without a name succeeded")
	}

	// A name is escaped once in the path: the manager reads it back.
	g.ok("DELETE /v1/raft/peers/a b%", &pb.RemovePeerResponse{})
	if _, err := run(t, "raft", "remove-peer", "--addr", g.srv.URL, "a b%"); err != nil {
		t.Errorf(`remove-peer "a b%%": %v`, err)
	}
}

func TestRaftTransferLeadership(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		leader   string
		wantBody string
		wantOut  string
	}{
		{"to a name", []string{"m2"}, "m2", `"name":"m2"`,
			"leadership transferred to \"m2\"\n"},
		{"to any voter", nil, "m3", `{}`,
			"leadership transferred to \"m3\"\n"},
		{"new leader not known yet", nil, "", `{}`,
			"leadership transferred; the new leader is not known yet (see `hivemind raft peers`)\n"},
		{"json", []string{"m2", "-o", "json"}, "m2", `"name":"m2"`,
			"{\n  \"leader\": \"m2\"\n}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGateway(t)
			g.ok("POST /v1/raft/transfer-leadership",
				&pb.TransferLeadershipResponse{Leader: tc.leader})
			args := append([]string{"raft", "transfer-leadership", "--addr", g.srv.URL}, tc.args...)
			out, err := run(t, args...)
			if err != nil {
				t.Fatalf("transfer-leadership: %v", err)
			}
			if out != tc.wantOut {
				t.Errorf("output %q, want %q", out, tc.wantOut)
			}
			reqs := g.requests()
			if len(reqs) != 1 || !strings.Contains(string(reqs[0].body), tc.wantBody) {
				t.Errorf("requests %v, want one with body containing %s", reqs, tc.wantBody)
			}
		})
	}
}
