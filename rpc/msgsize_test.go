package rpc

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// TestLargeMessages reads a state well above gRPC's default 4 MiB limit
// over gRPC and through the HTTP gateway.
func TestLargeMessages(t *testing.T) {
	m := startManager(t, "m1", true)
	big := strings.Repeat("a", 6<<20)
	m.raft.mustApply(t, fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{
		Name: "w1", Role: pb.RoleWorker, Address: big, Status: pb.NodeReady,
	}})

	resp, err := m.ctl.ListNodes(ctxT(t), &pb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("list nodes over grpc: %v", err)
	}
	if len(resp.GetNodes()) != 2 {
		t.Fatalf("listed %d nodes, want 2", len(resp.GetNodes()))
	}

	hresp, err := http.Get("http://" + m.srv.HTTPAddr() + "/v1/nodes")
	if err != nil {
		t.Fatalf("GET /v1/nodes: %v", err)
	}
	n, _ := io.Copy(io.Discard, hresp.Body)
	hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK || n < int64(len(big)) {
		t.Fatalf("GET /v1/nodes: http %d, %d bytes", hresp.StatusCode, n)
	}
}
