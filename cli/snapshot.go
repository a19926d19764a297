package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc"
)

// restoreTimeout bounds a restore upload and the cluster's restore.
const restoreTimeout = 5 * time.Minute

// snapshotRestore checks FILE locally, so that a wrong file is refused
// before any manager sees it, then uploads it to POST /v1/snapshot.
func (co *clientOpts) snapshotRestore(c *cli.Context) error {
	pos, err := args(c, 1, "FILE")
	if err != nil {
		return err
	}
	path := pos[0]
	info, err := fsm.InspectSQLite(path)
	if err == nil {
		err = fsm.CheckSQLite(path)
	}
	if err != nil {
		return fmt.Errorf("refusing to restore: %w", err)
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}

	var res rpc.RestoreResult
	if err := cl.upload(c.Context, "/v1/snapshot", f, fi.Size(), &res); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, struct {
			File      string `json:"file"`
			Bytes     int64  `json:"bytes"`
			RaftIndex uint64 `json:"raft_index"`
			Apps      int    `json:"apps"`
		}{path, res.Bytes, info.RaftIndex, res.Apps})
	}
	_, err = fmt.Fprintf(c.App.Writer,
		"restored %s (%d bytes, raft index %d, %d apps)\n",
		path, res.Bytes, info.RaftIndex, res.Apps)
	return err
}

func snapshotCommand(co *clientOpts) *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save, inspect and restore the cluster state",
		Subcommands: []*cli.Command{
			{
				Name:      "save",
				Usage:     "write the cluster state to FILE as a SQLite database",
				ArgsUsage: "FILE",
				Flags:     co.flags(),
				Action:    action(co.snapshotSave),
			},
			{
				Name:      "inspect",
				Usage:     "print a saved snapshot's Raft index and term and a count per table; needs no manager",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{&cli.StringFlag{
					Name:        "output",
					Aliases:     []string{"o"},
					Usage:       "output format: table or json",
					Value:       outputTable,
					Destination: &co.output,
				}},
				Action: action(co.snapshotInspect),
			},
			{
				Name: "restore",
				Usage: "replace the whole cluster state with the snapshot in FILE " +
					"(apps, versions, tasks, nodes and join tokens as saved)",
				ArgsUsage: "FILE",
				Flags:     co.flags(),
				Action:    action(co.snapshotRestore),
			},
		},
	}
}

func (co *clientOpts) snapshotSave(c *cli.Context) error {
	pos, err := args(c, 1, "FILE")
	if err != nil {
		return err
	}
	path := pos[0]
	cl, err := co.client()
	if err != nil {
		return err
	}
	n, err := saveAtomically(path, func(f *os.File) (int64, error) {
		return cl.download(c.Context, "/v1/snapshot", f)
	})
	if err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, struct {
			File  string `json:"file"`
			Bytes int64  `json:"bytes"`
		}{path, n})
	}
	_, err = fmt.Fprintf(c.App.Writer, "snapshot saved to %s (%d bytes)\n", path, n)
	return err
}

// saveAtomically writes path through a temporary file in the same
// directory, synced and renamed into place, so path is either the old
// file or the whole new one.
func saveAtomically(path string, write func(*os.File) (int64, error)) (int64, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	n, err := write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// The snapshot holds the join tokens: only its owner may read it.
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return n, nil
}

// snapshotInfoJSON is `snapshot inspect -o json`. Fields may be added.
// RaftTerm is 0 for a snapshot written before the term was recorded.
type snapshotInfoJSON struct {
	File          string         `json:"file"`
	RaftIndex     uint64         `json:"raft_index"`
	RaftTerm      uint64         `json:"raft_term"`
	SchemaVersion string         `json:"schema_version"`
	ClusterID     string         `json:"cluster_id"`
	Counts        map[string]int `json:"counts"`
}

// snapshotInspect reads a snapshot file locally: it works with every
// manager down, which is when a backup matters most.
func (co *clientOpts) snapshotInspect(c *cli.Context) error {
	pos, err := args(c, 1, "FILE")
	if err != nil {
		return err
	}
	if co.output != outputTable && co.output != outputJSON {
		return fmt.Errorf("output %q: want table or json", co.output)
	}
	info, err := fsm.InspectSQLite(pos[0])
	if err != nil {
		return err
	}
	out := snapshotInfoJSON{
		File: pos[0], RaftIndex: info.RaftIndex, RaftTerm: info.RaftTerm,
		SchemaVersion: info.SchemaVersion, ClusterID: info.ClusterID,
		Counts: info.Counts,
	}
	if co.output == outputJSON {
		err = writeJSON(c.App.Writer, out)
	} else {
		err = printSnapshotInfo(c.App.Writer, out)
	}
	if err != nil {
		return err
	}
	// The summary shows what a file holds; a backup is only good if
	// every row reads as a restore reads it.
	if err := fsm.CheckSQLite(pos[0]); err != nil {
		return fmt.Errorf("cannot be restored: %w", err)
	}
	return nil
}

func printSnapshotInfo(w io.Writer, s snapshotInfoJSON) error {
	term := fmt.Sprint(s.RaftTerm)
	if s.RaftTerm == 0 {
		term = "not recorded (snapshot predates raft_term)"
	}
	fmt.Fprintf(w, "File:           %s\n", s.File)
	fmt.Fprintf(w, "Raft index:     %d\n", s.RaftIndex)
	fmt.Fprintf(w, "Raft term:      %s\n", term)
	fmt.Fprintf(w, "Schema version: %s\n", s.SchemaVersion)
	fmt.Fprintf(w, "Cluster ID:     %s\n\n", orDash(s.ClusterID))

	names := make([]string, 0, len(s.Counts))
	for n := range s.Counts {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := make([][]string, 0, len(names))
	for _, n := range names {
		rows = append(rows, []string{n, fmt.Sprint(s.Counts[n])})
	}
	return table(w, []string{"TABLE", "ROWS"}, rows)
}
