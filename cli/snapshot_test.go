package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

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

	t.Run("bad output", func(t *testing.T) {
		if _, err := run(t, "snapshot", "inspect", path, "-o", "yaml"); err == nil {
			t.Fatal("inspect -o yaml succeeded")
		}
	})
}
