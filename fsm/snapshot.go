package fsm

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"
)

// Snapshot returns a raft.FSMSnapshot of the current state. It only takes
// a read view of the store, so it is quick; the SQLite file is written
// later by Persist while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot(), fsm: f}, nil
}

// fsmSnapshot is a raft.FSMSnapshot over a read view of the store.
type fsmSnapshot struct {
	snap *Snapshot
	fsm  *FSM
}

// Persist writes the view as a SQLite database into the sink. SQLite
// needs a file, so the database is built in a temporary file first and
// then copied.
//
// TODO: the temporary files of Persist and Restore are in $TMPDIR
// (default /tmp), so on a tmpfs /tmp a snapshot costs its size in
// memory while it is built or read; a scratch directory under the
// manager's data dir, passed in by the manager, would keep them on
// disk.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.persist(sink); err != nil {
		_ = sink.Cancel() // the persist error is the one worth returning
		return fmt.Errorf("persist snapshot %s: %w", sink.ID(), err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) persist(w io.Writer) error {
	dir, err := os.MkdirTemp("", "hivemind-snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	path := dir + "/state.db"
	if err := writeSQLite(s.snap, path); err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()

	n, err := io.Copy(w, file)
	if err != nil {
		return err
	}
	s.fsm.logger.Debug("snapshot persisted", "index", s.snap.Index(),
		"bytes", n)
	return nil
}

// Release does nothing: the read view holds no resources.
func (s *fsmSnapshot) Release() {}

// Restore replaces all state with the SQLite snapshot read from rc. The
// new state is built aside and swapped in at once, so readers never see a
// mix; on error the old state stays. Restore closes rc.
//
// Raft stops the manager when Restore fails on a restore an operator
// asked for; the file was read whole by CheckSQLite before, so only the
// temporary file can fail here (a full $TMPDIR).
// TODO: that temporary file under the data dir (see Persist), checked
// for space before the restore is proposed, would close that too.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()

	dir, err := os.MkdirTemp("", "hivemind-restore-")
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	defer os.RemoveAll(dir)

	// SQLite reads files, not streams.
	path := dir + "/state.db"
	if err := copyToFile(path, rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	db, err := readSQLite(path)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}

	f.store.db.Store(db)
	f.store.notify()
	f.logger.Info("restored snapshot", "index", f.store.Index())
	return nil
}

func copyToFile(path string, r io.Reader) error {
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(file, r); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}
