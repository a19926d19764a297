package fsm

import (
	"bytes"
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// fullState applies one of everything and returns the last index.
func fullState(t *testing.T, f *FSM) uint64 {
	t.Helper()
	cmds := []cmd{
		node("w1"),
		node("w2"),
		{SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{
			ClusterId: "c1", WorkerToken: "wt", ManagerToken: "mt"}}},
		deploy(1, "d1"),
		plan(&pb.PlanCmd{Create: []*pb.Task{
			task("t1", "web", "w1", 1), task("t2", "web", "w2", 1)}}),
		deploy(2, "d2"),
		reports("w1", 300, &pb.TaskReport{TaskId: "t1",
			State: pb.TaskRunning, Healthy: true}),
		reports("w2", 310, &pb.TaskReport{TaskId: "t2",
			State: pb.TaskFailed, ExitCode: 1, Message: "boom"}),
		plan(&pb.PlanCmd{Stop: []string{"t2"}, StopReason: "failed",
			RotatedOut: []string{"t2"}, At: 320}),
		{TaskReportsType, &pb.TaskReportsCmd{Node: "w1", At: 330,
			EndpointsIndex: 9}},
	}
	applyAll(t, f, cmds)
	return uint64(len(cmds))
}

// persist snapshots f into memory.
func persist(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer snap.Release()

	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v, want closed only",
			sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := testFSM(t)
	index := fullState(t, src)

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply goes on after Snapshot; the persisted state must not see it.
	if err := apply(t, src, index+1, node("late")); err != nil {
		t.Fatal(err)
	}
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}

	dst := testFSM(t)
	applyAll(t, dst, []cmd{node("stale")}) // Restore must discard it
	changed := dst.State().Changed()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	select {
	case <-changed:
	default:
		t.Error("changed channel not closed after restore")
	}

	want := testFSM(t)
	fullState(t, want)
	assertSameState(t, want.State().Snapshot(), dst.State().Snapshot())
	if got := dst.State().Index(); got != index {
		t.Errorf("restored index = %d, want %d", got, index)
	}
}

func assertSameState(t *testing.T, want, got *Snapshot) {
	t.Helper()
	same := func(what string, w, g []proto.Message) {
		t.Helper()
		if len(w) != len(g) {
			t.Errorf("%s: %d objects, want %d", what, len(g), len(w))
			return
		}
		for i := range w {
			if !proto.Equal(w[i], g[i]) {
				t.Errorf("%s[%d] = %v, want %v", what, i, g[i], w[i])
			}
		}
	}
	same("nodes", msgs(want.Nodes()), msgs(got.Nodes()))
	same("apps", msgs(want.Apps()), msgs(got.Apps()))
	same("tasks", msgs(want.Tasks()), msgs(got.Tasks()))
	same("deployments", msgs(want.DeploymentsByApp("web")),
		msgs(got.DeploymentsByApp("web")))
	same("meta", []proto.Message{want.Meta()}, []proto.Message{got.Meta()})
	same("tasks on w1", msgs(want.TasksByNode("w1")), msgs(got.TasksByNode("w1")))
}

func msgs[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func TestWriteSQLiteIsQueryable(t *testing.T) {
	f := testFSM(t)
	index := fullState(t, f)

	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte("old file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteSQLite(path); err != nil {
		t.Fatalf("write sqlite: %v", err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	rows, err := db.Query(
		"SELECT id, json_extract(json, '$.state') FROM tasks ORDER BY id")
	if err != nil {
		t.Fatalf("query tasks: %v", err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var id, state string
		if err := rows.Scan(&id, &state); err != nil {
			t.Fatal(err)
		}
		got[id] = state
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got["t1"] != pb.TaskRunning || got["t2"] != pb.TaskFailed || len(got) != 2 {
		t.Errorf("task states = %v, want t1 running, t2 failed", got)
	}

	var raftIndex, version, clusterID string
	err = db.QueryRow("SELECT value FROM meta WHERE key = 'raft_index'").
		Scan(&raftIndex)
	if err != nil || raftIndex != strconv.FormatUint(index, 10) {
		t.Errorf("raft_index = %q (%v), want %d", raftIndex, err, index)
	}
	err = db.QueryRow("SELECT value FROM meta WHERE key = 'schema_version'").
		Scan(&version)
	if err != nil || version != "1" {
		t.Errorf("schema_version = %q (%v), want 1", version, err)
	}
	err = db.QueryRow("SELECT json_extract(value, '$.cluster_id') FROM meta " +
		"WHERE key = 'cluster_meta'").Scan(&clusterID)
	if err != nil || clusterID != "c1" {
		t.Errorf("cluster_id = %q (%v), want c1", clusterID, err)
	}

	var appVersion int64
	var status string
	err = db.QueryRow("SELECT a.version, d.status FROM apps a "+
		"JOIN deployments d ON d.app = a.name WHERE d.id = 'd2'").
		Scan(&appVersion, &status)
	if err != nil || appVersion != 2 || status != pb.DeploymentRunning {
		t.Errorf("app version %d, d2 %q (%v), want 2, running",
			appVersion, status, err)
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	good := testFSM(t)
	fullState(t, good)
	goodBytes := persist(t, good)

	// Snapshots that InspectSQLite summarises but Restore cannot read.
	tampered := func(stmt string) []byte {
		path := filepath.Join(t.TempDir(), "tampered.db")
		if err := good.WriteSQLite(path); err != nil {
			t.Fatal(err)
		}
		testutil.ExecSQLite(t, path, stmt)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	cases := []struct {
		name     string
		data     []byte
		invalid  bool // refused as ErrInvalid
		inspects bool // though InspectSQLite summarises it
	}{
		{"garbage", []byte("this is not a database"), false, false},
		{"empty", nil, false, false},
		{"truncated", goodBytes[:len(goodBytes)/3], false, false},
		{"future schema", tampered("UPDATE meta SET value = '2' WHERE key = 'schema_version'"), true, true},
		{"task not JSON", tampered("UPDATE tasks SET json = '{not json' WHERE rowid = 1"), true, true},
		{"bad cluster meta", tampered("UPDATE meta SET value = '[' WHERE key = 'cluster_meta'"), true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := testFSM(t)
			applyAll(t, f, []cmd{node("keep")})

			err := f.Restore(io.NopCloser(bytes.NewReader(tc.data)))
			if err == nil {
				t.Fatal("restore succeeded, want an error")
			}
			if tc.invalid && !errors.Is(err, ErrInvalid) {
				t.Errorf("restore: %v, want ErrInvalid", err)
			}
			if f.State().Node("keep") == nil || f.State().Index() != 1 {
				t.Error("a failed restore changed the state")
			}

			// CheckSQLite refuses what Restore refuses, before Raft
			// would be asked to restore it.
			path := filepath.Join(t.TempDir(), "file.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := CheckSQLite(path); err == nil {
				t.Error("CheckSQLite passed a file Restore refuses")
			}
			if _, err := InspectSQLite(path); tc.inspects && err != nil {
				t.Errorf("InspectSQLite: %v, want a summary of a readable snapshot", err)
			}
		})
	}
	good2 := filepath.Join(t.TempDir(), "good.db")
	if err := good.WriteSQLite(good2); err != nil {
		t.Fatal(err)
	}
	if err := CheckSQLite(good2); err != nil {
		t.Errorf("CheckSQLite of a good snapshot: %v", err)
	}
}

// TestReadersDuringApply runs readers, a snapshot writer and Apply at once;
// it is meant for -race.
func TestReadersDuringApply(t *testing.T) {
	f := testFSM(t)
	fullState(t, f)

	done := make(chan error, 1)
	go func() {
		path := filepath.Join(t.TempDir(), "live.db")
		done <- f.WriteSQLite(path)
	}()

	const n = 100
	for i := uint64(0); i < n; i++ {
		name := "n" + strconv.FormatUint(i, 10)
		if err := apply(t, f, 100+i, node(name)); err != nil {
			t.Fatal(err)
		}
		s := f.State().Snapshot()
		if s.Node(name) == nil || s.Index() != 100+i {
			t.Fatalf("node %s not visible at index %d", name, 100+i)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("write sqlite during apply: %v", err)
	}
	if got := len(f.State().Nodes()); got != n+2 {
		t.Errorf("nodes = %d, want %d", got, n+2)
	}
}

// Rows that read, in a state the leader could not carry on from: Restore
// (which also installs the leader's own snapshots) takes them, and
// CheckSQLite, which a restore an operator asks for passes first,
// refuses them.
func TestCheckSQLiteRefusesBadApps(t *testing.T) {
	good := testFSM(t)
	fullState(t, good)
	cases := map[string]string{
		"current version missing": `UPDATE apps SET json = json_set(json, '$.version', '77')`,
		"app renamed":             `UPDATE apps SET json = json_set(json, '$.name', 'other')`,
		"spec not valid": `UPDATE apps SET name = '../../etc', json = json_set(json,
			'$.name', '../../etc', '$.versions[0].spec.name', '../../etc',
			'$.versions[1].spec.name', '../../etc')`,
	}
	for name, stmt := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := good.WriteSQLite(path); err != nil {
				t.Fatal(err)
			}
			testutil.ExecSQLite(t, path, stmt)
			err := CheckSQLite(path)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "app ") {
				t.Fatalf("CheckSQLite: %v, want ErrInvalid naming the app", err)
			}
			t.Log(err)
		})
	}
}
