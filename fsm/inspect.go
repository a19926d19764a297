package fsm

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hivemind-orch/hivemind/rpc/pb"
	appspec "github.com/hivemind-orch/hivemind/spec"
)

// ErrNotSnapshot means a file is not a Hivemind SQLite snapshot: not
// SQLite at all, or SQLite without the meta table and schema version
// this package writes.
var ErrNotSnapshot = errors.New("not a hivemind snapshot")

// sqliteMagic starts every SQLite 3 database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// Info summarises a SQLite snapshot, as `snapshot inspect` prints it.
type Info struct {
	// RaftIndex is the index of the last entry applied in the snapshot.
	RaftIndex uint64
	// RaftTerm is that entry's term; 0 when the snapshot does not
	// record it (written before raft_term existed).
	RaftTerm uint64
	// SchemaVersion is the snapshot format's version ("1").
	SchemaVersion string
	// ClusterID is the cluster the snapshot was taken from, "" if its
	// meta was never set.
	ClusterID string
	// Counts is the number of rows of each table but meta.
	Counts map[string]int
}

// InspectSQLite reads the summary of the snapshot at path without
// loading its objects. It opens the file read-only and never creates
// it. A file that is not a snapshot gives an error wrapping
// ErrNotSnapshot; a snapshot of another schema version is summarised
// all the same, since the meta table and the counts do not depend on it.
func InspectSQLite(path string) (Info, error) {
	if err := checkMagic(path); err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %w", path, err)
	}
	info, err := inspect(path)
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %w", path, err)
	}
	return info, nil
}

// CheckSQLite reads every row of the snapshot at path as Restore does,
// and returns the error Restore would return, if any. Raft stops a
// manager whose state machine fails a restore it asked for, so a file
// goes to Raft only once this has passed.
//
// It also refuses a state the leader could not carry on from: an app
// whose current version has no spec, or whose spec is not valid (a name
// no request could name, for one), since such an app could be neither
// scaled nor removed.
func CheckSQLite(path string) error {
	if err := checkMagic(path); err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}
	db, err := readSQLite(path)
	if err == nil {
		err = checkApps(&Snapshot{txn: db.Txn(false)})
	}
	if err != nil {
		return fmt.Errorf("snapshot %q: %w", path, err)
	}
	return nil
}

// checkApps refuses an app without a valid spec for its version.
func checkApps(snap *Snapshot) error {
	for _, app := range snap.Apps() {
		sp := SpecOf(app, app.GetVersion())
		switch {
		case sp == nil:
			return fmt.Errorf("app %q: no spec for its version %d: %w",
				app.GetName(), app.GetVersion(), ErrInvalid)
		case sp.GetName() != app.GetName():
			return fmt.Errorf("app %q: version %d names app %q: %w",
				app.GetName(), app.GetVersion(), sp.GetName(), ErrInvalid)
		}
		if err := appspec.Validate(sp); err != nil {
			return fmt.Errorf("app %q version %d: %w: %w",
				app.GetName(), app.GetVersion(), ErrInvalid, err)
		}
	}
	return nil
}

// checkMagic refuses a file that is not SQLite before the driver sees
// it: the driver would create a missing file and report others late.
func checkMagic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, sqliteMagic) {
		return fmt.Errorf("%w: not a SQLite database", ErrNotSnapshot)
	}
	return nil
}

func inspect(path string) (_ Info, err error) {
	// A URI opens the file read-only; SQLite wants it absolute, or the
	// first path segment reads as a host.
	abs, err := filepath.Abs(path)
	if err != nil {
		return Info{}, err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: "mode=ro"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return Info{}, err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()

	meta, err := readMeta(db)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrNotSnapshot, err)
	}
	info := Info{SchemaVersion: meta[metaSchemaVersion], Counts: map[string]int{}}
	if info.SchemaVersion == "" {
		return Info{}, fmt.Errorf("%w: no schema version in meta", ErrNotSnapshot)
	}
	if info.RaftIndex, err = metaUint(meta, metaRaftIndex); err != nil {
		return Info{}, err
	}
	if info.RaftTerm, err = metaUint(meta, metaRaftTerm); err != nil {
		return Info{}, err
	}
	if s, ok := meta[metaClusterMeta]; ok {
		cm := &pb.ClusterMeta{}
		if err := jsonIn.Unmarshal([]byte(s), cm); err != nil {
			return Info{}, fmt.Errorf("cluster meta: %w: %w", ErrInvalid, err)
		}
		info.ClusterID = cm.GetClusterId()
	}

	tables, err := tableNames(db)
	if err != nil {
		return Info{}, err
	}
	for _, t := range tables {
		var n int
		// The name comes from sqlite_master, quoted as an identifier.
		q := `SELECT count(*) FROM "` + t + `"`
		if err := db.QueryRow(q).Scan(&n); err != nil {
			return Info{}, fmt.Errorf("count %s: %w", t, err)
		}
		info.Counts[t] = n
	}
	return info, nil
}

// metaUint parses a numeric meta value; absent is 0.
func metaUint(meta map[string]string, key string) (uint64, error) {
	s, ok := meta[key]
	if !ok {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w: %w", key, s, ErrInvalid, err)
	}
	return v, nil
}

// tableNames lists the tables of db but meta and SQLite's own.
func tableNames(db *sql.DB) ([]string, error) {
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'
		AND name != 'meta' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
