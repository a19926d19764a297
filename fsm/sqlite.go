package fsm

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	memdb "github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// schemaVersion is the snapshot format this package writes and reads.
// Bump it when a table or column changes meaning.
const schemaVersion = "1"

const sqliteSchema = `
CREATE TABLE nodes (name TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE apps (name TEXT PRIMARY KEY, version INTEGER NOT NULL,
	json TEXT NOT NULL);
CREATE TABLE tasks (id TEXT PRIMARY KEY, app TEXT NOT NULL,
	node TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
	json TEXT NOT NULL);
CREATE INDEX tasks_app ON tasks (app);
CREATE INDEX tasks_node ON tasks (node);
CREATE TABLE deployments (id TEXT PRIMARY KEY, app TEXT NOT NULL,
	status TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX deployments_app ON deployments (app);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`

var (
	// Proto field names make the JSON match the .proto and the API.
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}

	// Unknown fields are dropped rather than refused: a snapshot from a
	// newer manager (fields are only ever added) must still restore on
	// an older one during a rolling upgrade.
	jsonIn = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// WriteSQLite writes the current state as a new SQLite database at path,
// for `snapshot save`. It writes a temporary file in the same directory and
// renames it, so path never holds a partial snapshot; an existing file at
// path is replaced.
func (f *FSM) WriteSQLite(path string) error {
	snap := f.store.Snapshot()

	tmp, err := os.CreateTemp(filepath.Dir(path), ".hivemind-snapshot-*")
	if err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // after a successful rename it is gone already
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}

	if err := writeSQLite(snap, name); err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}
	return nil
}

// writeSQLite writes the view into a new database at path, which must be
// absent or empty.
func writeSQLite(snap *Snapshot, path string) (err error) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()

	if _, err := db.Exec(sqliteSchema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	if err := writeRows(tx, snap); err != nil {
		_ = tx.Rollback() // the write error is the one worth returning
		return err
	}
	return tx.Commit()
}

func writeRows(tx *sql.Tx, snap *Snapshot) error {
	w := rowWriter{tx: tx}

	for _, n := range snap.Nodes() {
		w.put("INSERT INTO nodes VALUES (?, ?)", n, n.Name)
	}
	for _, a := range snap.Apps() {
		w.put("INSERT INTO apps VALUES (?, ?, ?)", a, a.Name,
			int64(a.Version))
	}
	for _, t := range snap.Tasks() {
		w.put("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)", t,
			t.Id, t.App, t.Node, int64(t.Version), t.State)
	}
	for _, d := range all[*pb.Deployment](snap.txn, tableDeployments, indexID) {
		w.put("INSERT INTO deployments VALUES (?, ?, ?, ?)", d,
			d.Id, d.App, d.Status)
	}

	const meta = "INSERT INTO meta VALUES (?, ?)"
	w.exec(meta, metaRaftIndex, strconv.FormatUint(snap.Index(), 10))
	if term := snap.Term(); term != 0 {
		w.exec(meta, metaRaftTerm, strconv.FormatUint(term, 10))
	}
	w.exec(meta, metaSchemaVersion, schemaVersion)
	w.put(meta, snap.Meta(), metaClusterMeta)
	return w.err
}

// rowWriter inserts rows and keeps the first error, so that writeRows
// reads as the list of what a snapshot holds.
type rowWriter struct {
	tx  *sql.Tx
	err error
}

// put inserts a row of keys followed by msg as JSON.
func (w *rowWriter) put(query string, msg proto.Message, keys ...any) {
	if w.err != nil {
		return
	}
	b, err := jsonOut.Marshal(msg)
	if err != nil {
		w.err = fmt.Errorf("encode %v: %w", keys, err)
		return
	}
	w.exec(query, append(keys, string(b))...)
}

func (w *rowWriter) exec(query string, args ...any) {
	if w.err != nil {
		return
	}
	if _, err := w.tx.Exec(query, args...); err != nil {
		w.err = fmt.Errorf("write %v: %w", args[0], err)
	}
}

// readSQLite builds a fresh database from the snapshot at path.
func readSQLite(path string) (_ *memdb.MemDB, err error) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()

	meta, err := readMeta(db)
	if err != nil {
		return nil, err
	}
	if v := meta[metaSchemaVersion]; v != schemaVersion {
		return nil, fmt.Errorf("schema version %q, want %q: %w",
			v, schemaVersion, ErrInvalid)
	}
	index, err := strconv.ParseUint(meta[metaRaftIndex], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("raft index %q: %w: %w",
			meta[metaRaftIndex], ErrInvalid, err)
	}

	// raft_term is absent from snapshots written before it existed.
	var term uint64
	if s, ok := meta[metaRaftTerm]; ok {
		term, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("raft term %q: %w: %w", s, ErrInvalid, err)
		}
	}

	mdb := newMemDB()
	txn := mdb.Txn(true)
	defer txn.Abort() // no-op after Commit

	tables := []struct {
		name   string
		newMsg func() proto.Message
	}{
		{tableNodes, func() proto.Message { return &pb.Node{} }},
		{tableApps, func() proto.Message { return &pb.App{} }},
		{tableTasks, func() proto.Message { return &pb.Task{} }},
		{tableDeployments, func() proto.Message { return &pb.Deployment{} }},
	}
	for _, tb := range tables {
		if err := readTable(db, txn, tb.name, tb.newMsg); err != nil {
			return nil, err
		}
	}

	cm := &pb.ClusterMeta{}
	if s, ok := meta[metaClusterMeta]; ok {
		if err := jsonIn.Unmarshal([]byte(s), cm); err != nil {
			return nil, fmt.Errorf("cluster meta: %w: %w", ErrInvalid, err)
		}
	}
	entries := []*metaEntry{
		{Key: metaRaftIndex, Index: index, Term: term},
		{Key: metaClusterMeta, Cluster: cm},
	}
	for _, e := range entries {
		if err := txn.Insert(tableMeta, e); err != nil {
			return nil, fmt.Errorf("meta %s: %w", e.Key, err)
		}
	}
	txn.Commit()
	return mdb, nil
}

func readMeta(db *sql.DB) (map[string]string, error) {
	rows, err := db.Query("SELECT key, value FROM meta")
	if err != nil {
		return nil, fmt.Errorf("read meta: %w: %w", ErrInvalid, err)
	}
	defer rows.Close()

	meta := make(map[string]string)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("read meta: %w", err)
		}
		meta[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	return meta, nil
}

// readTable loads every row of a table (named as in memdb) into txn.
func readTable(db *sql.DB, txn *memdb.Txn, table string,
	newMsg func() proto.Message) error {
	rows, err := db.Query("SELECT json FROM " + table)
	if err != nil {
		return fmt.Errorf("read %s: %w: %w", table, ErrInvalid, err)
	}
	defer rows.Close()

	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("read %s: %w", table, err)
		}
		msg := newMsg()
		if err := jsonIn.Unmarshal([]byte(s), msg); err != nil {
			return fmt.Errorf("read %s: %w: %w", table, ErrInvalid, err)
		}
		if err := txn.Insert(table, msg); err != nil {
			return fmt.Errorf("read %s: %w: %w", table, ErrInvalid, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	return nil
}
