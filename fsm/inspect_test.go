package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// termState is fullState followed by a node applied in term 4.
func termState(t *testing.T) (*FSM, uint64) {
	t.Helper()
	f := testFSM(t)
	index := fullState(t, f) + 1
	data, err := Encode(UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{Name: "w3"}})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: index, Term: 4, Data: data}); res != nil {
		t.Fatalf("apply: %v", res)
	}
	return f, index
}

func TestInspectSQLite(t *testing.T) {
	f, index := termState(t)
	path := filepath.Join(t.TempDir(), "state.db")
	if err := f.WriteSQLite(path); err != nil {
		t.Fatalf("write sqlite: %v", err)
	}

	info, err := InspectSQLite(path)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	want := map[string]int{"nodes": 3, "apps": 1, "tasks": 2, "deployments": 2}
	if info.RaftIndex != index || info.RaftTerm != 4 || info.SchemaVersion != "1" ||
		info.ClusterID != "c1" || !sameCounts(info.Counts, want) {
		t.Fatalf("info %+v, want index %d, term 4, schema 1, cluster c1, counts %v",
			info, index, want)
	}

	// A relative path, and one with characters special in a URI.
	odd := filepath.Join(filepath.Dir(path), "a b?c#d.db")
	if err := os.Rename(path, odd); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(odd))
	if rel, err := InspectSQLite(filepath.Base(odd)); err != nil || rel.RaftIndex != index {
		t.Fatalf("inspect by relative path: %+v, %v", rel, err)
	}
	if err := os.Rename(odd, path); err != nil {
		t.Fatal(err)
	}

	// A snapshot written before raft_term existed has no term.
	testutil.ExecSQLite(t, path, "DELETE FROM meta WHERE key = 'raft_term'")
	info, err = InspectSQLite(path)
	if err != nil || info.RaftTerm != 0 || info.RaftIndex != index {
		t.Fatalf("inspect without raft_term: %+v, %v; want index %d, term 0",
			info, err, index)
	}
}

func TestTermSurvivesRestore(t *testing.T) {
	f, index := termState(t)
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, f)))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	snap := g.State().Snapshot()
	if snap.Index() != index || snap.Term() != 4 {
		t.Fatalf("restored index %d term %d, want %d and 4",
			snap.Index(), snap.Term(), index)
	}
}

func TestInspectRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("this is not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherDB := filepath.Join(dir, "other.db")
	testutil.ExecSQLite(t, otherDB, "CREATE TABLE things (id TEXT)")
	noVersion := filepath.Join(dir, "noversion.db")
	testutil.ExecSQLite(t, noVersion, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")

	cases := []struct {
		name string
		path string
		want error
	}{
		{"not sqlite", garbage, ErrNotSnapshot},
		{"other sqlite database", otherDB, ErrNotSnapshot},
		{"meta without schema version", noVersion, ErrNotSnapshot},
		{"missing file", filepath.Join(dir, "missing.db"), os.ErrNotExist},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := InspectSQLite(tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("inspect: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("inspect created the missing file (%v)", err)
	}
}

func sameCounts(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
