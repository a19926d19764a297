package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

func snapshotCommand(co *clientOpts) *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save the cluster state",
		Subcommands: []*cli.Command{
			{
				Name:      "save",
				Usage:     "write the cluster state to FILE as a SQLite database",
				ArgsUsage: "FILE",
				Flags:     co.flags(),
				Action:    action(co.snapshotSave),
			},
		},
	}
}

// TODO: `snapshot restore FILE` (DESIGN.md) needs a restore route in the
// API first; proto/api.yaml has none yet.

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
		err = os.Chmod(tmp, 0o644)
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
