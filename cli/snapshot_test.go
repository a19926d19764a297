package cli

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// tamperedSnapshot is writeSnapshot with a node row that is not JSON:
// its summary reads, a restore cannot.
func tamperedSnapshot(t *testing.T) string {
	t.Helper()
	path := writeSnapshot(t)
	testutil.ExecSQLite(t, path, "UPDATE nodes SET json = '{not json' WHERE name = 'w1'")
	return path
}

// writeSnapshot writes a snapshot of a small state, applied in term 2,
// and returns its path.
func writeSnapshot(t *testing.T) string {
	t.Helper()
	f := fsm.New(nil)
	cmds := []struct {
		typ fsm.CommandType
		msg proto.Message
	}{
		{fsm.SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{ClusterId: "c1"}}},
		{fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{Name: "m1", Role: pb.RoleManager}}},
		{fsm.UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{Name: "w1", Role: pb.RoleWorker}}},
	}
	for i, c := range cmds {
		data, err := fsm.Encode(c.typ, c.msg)
		if err != nil {
			t.Fatal(err)
		}
		if res := f.Apply(&raft.Log{Index: uint64(i + 1), Term: 2, Data: data}); res != nil {
			t.Fatalf("apply %v: %v", c.typ, res)
		}
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := f.WriteSQLite(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSnapshotInspect(t *testing.T) {
	path := writeSnapshot(t)

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "snapshot", "inspect", path)
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		for _, want := range []string{
			"Raft index:     3\n", "Raft term:      2\n", "Schema version: 1\n",
			"Cluster ID:     c1\n", "\nnodes        2\n", "\ntasks        0\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "snapshot", "inspect", path, "-o", "json")
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		jsonEq(t, out, `{"file":"`+path+`","raft_index":3,"raft_term":2,
			"schema_version":"1","cluster_id":"c1",
			"counts":{"apps":0,"deployments":0,"nodes":2,"tasks":0}}`)
	})

	t.Run("not a snapshot", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(bad, []byte("hello"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "snapshot", "inspect", bad)
		if err == nil || !strings.Contains(err.Error(), "not a hivemind snapshot") {
			t.Fatalf("inspect %s: %v, want not a hivemind snapshot", bad, err)
		}
	})

	t.Run("summary of a file a restore cannot read", func(t *testing.T) {
		tampered := tamperedSnapshot(t)
		out, err := run(t, "snapshot", "inspect", tampered)
		if !strings.Contains(out, "\nnodes        2\n") {
			t.Errorf("output lacks the summary:\n%s", out)
		}
		if err == nil || !strings.Contains(err.Error(), "cannot be restored") ||
			!strings.Contains(err.Error(), "read nodes: invalid") {
			t.Fatalf("inspect %s: %v, want cannot be restored: read nodes: invalid", tampered, err)
		}
	})

	t.Run("bad output", func(t *testing.T) {
		if _, err := run(t, "snapshot", "inspect", path, "-o", "yaml"); err == nil {
			t.Fatal("inspect -o yaml succeeded")
		}
	})
}

func TestSnapshotRestore(t *testing.T) {
	path := writeSnapshot(t)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(bad, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		file    string
		answer  func(w http.ResponseWriter)
		args    []string
		wantErr string // "" for success
		wantOut string
		posts   int
	}{
		{name: "uploads and reports", file: path,
			answer: func(w http.ResponseWriter) {
				io.WriteString(w, `{"raft_index":3,"bytes":`+fmt.Sprint(len(want))+`,"apps":0}`)
			},
			wantOut: fmt.Sprintf("restored %s (%d bytes, raft index 3, 0 apps)\n", path, len(want)),
			posts:   1},
		{name: "json", file: path, args: []string{"-o", "json"},
			answer: func(w http.ResponseWriter) {
				io.WriteString(w, `{"raft_index":3,"bytes":`+fmt.Sprint(len(want))+`,"apps":0}`)
			},
			wantOut: `"raft_index": 3`,
			posts:   1},
		{name: "refuses a non-snapshot before any upload", file: bad,
			wantErr: "refusing to restore: snapshot \"" + bad + "\": not a hivemind snapshot"},
		{name: "refuses an unreadable row before any upload", file: tamperedSnapshot(t),
			wantErr: "read nodes: invalid"},
		{name: "shows the manager's error", file: path,
			answer: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"code":14,"message":"snapshot restore: no leader"}`)
			},
			wantErr: "snapshot restore: no leader", posts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGateway(t)
			if tc.answer != nil {
				g.handle("POST /v1/snapshot", tc.answer)
			}
			args := append([]string{"snapshot", "restore", "--addr", g.srv.URL}, tc.args...)
			out, err := run(t, append(args, tc.file)...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("restore: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("restore: %v, want an error with %q", err, tc.wantErr)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output %q, want %q", out, tc.wantOut)
			}
			reqs := g.requests()
			if len(reqs) != tc.posts {
				t.Fatalf("%d requests, want %d", len(reqs), tc.posts)
			}
			for _, r := range reqs {
				if r.method != http.MethodPost || r.path != "/v1/snapshot" ||
					!bytes.Equal(r.body, want) {
					t.Errorf("request %s %s with %d bytes, want POST /v1/snapshot with the file",
						r.method, r.path, len(r.body))
				}
			}
		})
	}
}
