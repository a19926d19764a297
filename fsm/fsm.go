package fsm

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// FSM is Hivemind's raft.FSM. Create it with New. Raft calls Apply,
// Snapshot and Restore from one goroutine; State and WriteSQLite may be
// called from any goroutine at any time.
type FSM struct {
	logger hclog.Logger
	store  *Store
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM with empty state. A nil logger discards logs.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{logger: logger.Named("fsm"), store: newStore()}
}

// State returns the live store. It is the same Store for the FSM's whole
// life; Restore swaps its contents, not the Store.
func (f *FSM) State() *Store { return f.store }

// Apply applies one committed Raft entry made by Encode. It returns nil, or
// an error wrapping one of the sentinels when the entry is malformed or
// breaks a rule; then the state is unchanged but the applied index still
// moves to l.Index, since the entry is consumed either way.
func (f *FSM) Apply(l *raft.Log) interface{} {
	t, msg, err := Decode(l.Data)
	if err != nil {
		f.logger.Warn("cannot decode log entry", "index", l.Index,
			"error", err)
	}

	db := f.store.db.Load()
	txn := db.Txn(true)
	if err == nil {
		a := &applier{txn: txn, index: l.Index}
		err = a.apply(t, msg)
	}
	if err != nil {
		// Keep nothing of a failed command, but record its index.
		txn.Abort()
		txn = db.Txn(true)
	}
	if ierr := setIndex(txn, l.Index, l.Term); ierr != nil {
		txn.Abort()
		return fmt.Errorf("apply index %d: %w", l.Index, ierr)
	}
	txn.Commit()
	f.store.notify()

	if err != nil {
		f.logger.Debug("command refused", "type", t, "index", l.Index,
			"error", err)
		return err
	}
	return nil
}

// setIndex records the index and term of the entry just applied.
func setIndex(txn *memdb.Txn, index, term uint64) error {
	return txn.Insert(tableMeta,
		&metaEntry{Key: metaRaftIndex, Index: index, Term: term})
}

// applier applies one command inside one write transaction.
type applier struct {
	txn   *memdb.Txn
	index uint64
}

func (a *applier) apply(t CommandType, msg proto.Message) error {
	// Switch on the payload, not on t: Decode pairs them, and a type
	// switch cannot panic on a mismatch.
	switch cmd := msg.(type) {
	case *pb.UpsertNodeCmd:
		return a.upsertNode(cmd)
	case *pb.NodeStatusCmd:
		return a.nodeStatus(cmd)
	case *pb.DeployAppCmd:
		return a.deployApp(cmd)
	case *pb.RemoveAppCmd:
		return a.removeApp(cmd)
	case *pb.ScaleAppCmd:
		return a.scaleApp(cmd)
	case *pb.PlanCmd:
		return a.plan(cmd)
	case *pb.TaskReportsCmd:
		return a.taskReports(cmd)
	case *pb.DeleteTasksCmd:
		return a.deleteTasks(cmd)
	case *pb.SetMetaCmd:
		return a.setMeta(cmd)
	}
	return fmt.Errorf("apply %s: %w", t, ErrUnknownCommand)
}
