package fsm

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Table and index names of the memdb schema.
const (
	tableNodes       = "nodes"
	tableApps        = "apps"
	tableTasks       = "tasks"
	tableDeployments = "deployments"
	tableMeta        = "meta"

	indexID   = "id"
	indexApp  = "app"
	indexNode = "node"
)

// Keys of the meta table, in memdb and in SQLite snapshots.
const (
	metaRaftIndex     = "raft_index"
	metaRaftTerm      = "raft_term" // SQLite only: the raft_index entry holds it
	metaClusterMeta   = "cluster_meta"
	metaSchemaVersion = "schema_version"
)

// metaEntry is a row of the meta table. Only the field that belongs to Key
// is set.
type metaEntry struct {
	Key   string
	Index uint64
	// Term is the Raft term of the entry at Index (raft_index only; 0
	// when unknown, as after restoring a snapshot written without it).
	Term    uint64
	Cluster *pb.ClusterMeta
}

func schema() *memdb.DBSchema {
	byField := func(name, field string, unique, missing bool) *memdb.IndexSchema {
		return &memdb.IndexSchema{
			Name:         name,
			Unique:       unique,
			AllowMissing: missing,
			Indexer:      &memdb.StringFieldIndex{Field: field},
		}
	}
	table := func(name, key string, more ...*memdb.IndexSchema) *memdb.TableSchema {
		ts := &memdb.TableSchema{
			Name: name,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: byField(indexID, key, true, false),
			},
		}
		for _, is := range more {
			ts.Indexes[is.Name] = is
		}
		return ts
	}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableNodes: table(tableNodes, "Name"),
		tableApps:  table(tableApps, "Name"),
		tableTasks: table(tableTasks, "Id",
			byField(indexApp, "App", false, true),
			byField(indexNode, "Node", false, true)),
		tableDeployments: table(tableDeployments, "Id",
			byField(indexApp, "App", false, true)),
		tableMeta: table(tableMeta, "Key"),
	}}
}

// newMemDB returns an empty database with the store's schema.
func newMemDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant: an error here is a programming
		// mistake caught by every test.
		panic(fmt.Sprintf("fsm: bad memdb schema: %v", err))
	}
	return db
}

// Store is the live state: an in-memory database written only by the FSM.
// The zero value is not usable; get a Store from FSM.State. All methods are
// safe for concurrent use. Objects it returns are shared and must not be
// modified (see the package doc).
type Store struct {
	db atomic.Pointer[memdb.MemDB] // swapped whole by Restore

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by notify
}

func newStore() *Store {
	s := &Store{changed: make(chan struct{})}
	s.db.Store(newMemDB())
	return s
}

// Snapshot returns a consistent point-in-time read view of the state. It
// copies nothing and is cheap; Apply goes on while a view is in use.
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{txn: s.db.Load().Txn(false)}
}

// Changed returns a channel that is closed after the next Apply or Restore
// commits. Take a Snapshot after getting the channel, so that no change
// falls between the two.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// notify wakes everyone waiting on Changed.
func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// Index returns the index of the last applied Raft entry.
func (s *Store) Index() uint64 { return s.Snapshot().Index() }

// Meta returns the cluster meta; never nil.
func (s *Store) Meta() *pb.ClusterMeta { return s.Snapshot().Meta() }

// Node returns the node called name, or nil.
func (s *Store) Node(name string) *pb.Node { return s.Snapshot().Node(name) }

// Nodes returns every node, sorted by name.
func (s *Store) Nodes() []*pb.Node { return s.Snapshot().Nodes() }

// App returns the app called name, or nil.
func (s *Store) App(name string) *pb.App { return s.Snapshot().App(name) }

// Apps returns every app, sorted by name.
func (s *Store) Apps() []*pb.App { return s.Snapshot().Apps() }

// Task returns the task with the given id, or nil.
func (s *Store) Task(id string) *pb.Task { return s.Snapshot().Task(id) }

// Tasks returns every task, sorted by id.
func (s *Store) Tasks() []*pb.Task { return s.Snapshot().Tasks() }

// TasksByApp returns the tasks of an app, sorted by id.
func (s *Store) TasksByApp(app string) []*pb.Task {
	return s.Snapshot().TasksByApp(app)
}

// TasksByNode returns the tasks placed on a node, sorted by id.
func (s *Store) TasksByNode(node string) []*pb.Task {
	return s.Snapshot().TasksByNode(node)
}

// Deployment returns the deployment with the given id, or nil.
func (s *Store) Deployment(id string) *pb.Deployment {
	return s.Snapshot().Deployment(id)
}

// DeploymentsByApp returns the deployments of an app, oldest first.
func (s *Store) DeploymentsByApp(app string) []*pb.Deployment {
	return s.Snapshot().DeploymentsByApp(app)
}

// LatestDeployment returns the newest deployment of an app, or nil.
func (s *Store) LatestDeployment(app string) *pb.Deployment {
	return s.Snapshot().LatestDeployment(app)
}

// Snapshot is a consistent, read-only view of the state at one Raft index.
// It stays valid and unchanged for as long as it is held. Objects it
// returns are shared and must not be modified.
type Snapshot struct {
	txn *memdb.Txn
}

// Index returns the index of the last Raft entry applied in this view.
func (s *Snapshot) Index() uint64 {
	if e := s.meta(metaRaftIndex); e != nil {
		return e.Index
	}
	return 0
}

// Meta returns the cluster meta; never nil (empty before the first
// SetMeta).
func (s *Snapshot) Meta() *pb.ClusterMeta {
	if e := s.meta(metaClusterMeta); e != nil && e.Cluster != nil {
		return e.Cluster
	}
	return &pb.ClusterMeta{}
}

// Term returns the Raft term of the last entry applied in this view, 0
// if unknown.
func (s *Snapshot) Term() uint64 {
	if e := s.meta(metaRaftIndex); e != nil {
		return e.Term
	}
	return 0
}

func (s *Snapshot) meta(key string) *metaEntry {
	e, _ := first[*metaEntry](s.txn, tableMeta, indexID, key)
	return e
}

// Node returns the node called name, or nil.
func (s *Snapshot) Node(name string) *pb.Node {
	n, _ := first[*pb.Node](s.txn, tableNodes, indexID, name)
	return n
}

// Nodes returns every node, sorted by name.
func (s *Snapshot) Nodes() []*pb.Node {
	return all[*pb.Node](s.txn, tableNodes, indexID)
}

// App returns the app called name, or nil.
func (s *Snapshot) App(name string) *pb.App {
	a, _ := first[*pb.App](s.txn, tableApps, indexID, name)
	return a
}

// Apps returns every app, sorted by name.
func (s *Snapshot) Apps() []*pb.App {
	return all[*pb.App](s.txn, tableApps, indexID)
}

// Task returns the task with the given id, or nil.
func (s *Snapshot) Task(id string) *pb.Task {
	t, _ := first[*pb.Task](s.txn, tableTasks, indexID, id)
	return t
}

// Tasks returns every task, sorted by id.
func (s *Snapshot) Tasks() []*pb.Task {
	return all[*pb.Task](s.txn, tableTasks, indexID)
}

// TasksByApp returns the tasks of an app, sorted by id.
func (s *Snapshot) TasksByApp(app string) []*pb.Task {
	return sortTasks(all[*pb.Task](s.txn, tableTasks, indexApp, app))
}

// TasksByNode returns the tasks placed on a node, sorted by id.
func (s *Snapshot) TasksByNode(node string) []*pb.Task {
	return sortTasks(all[*pb.Task](s.txn, tableTasks, indexNode, node))
}

// Deployment returns the deployment with the given id, or nil.
func (s *Snapshot) Deployment(id string) *pb.Deployment {
	d, _ := first[*pb.Deployment](s.txn, tableDeployments, indexID, id)
	return d
}

// DeploymentsByApp returns the deployments of an app, oldest first (by
// create_index, then id).
func (s *Snapshot) DeploymentsByApp(app string) []*pb.Deployment {
	ds := all[*pb.Deployment](s.txn, tableDeployments, indexApp, app)
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].CreateIndex != ds[j].CreateIndex {
			return ds[i].CreateIndex < ds[j].CreateIndex
		}
		return ds[i].Id < ds[j].Id
	})
	return ds
}

// LatestDeployment returns the newest deployment of an app, or nil if it
// has none.
func (s *Snapshot) LatestDeployment(app string) *pb.Deployment {
	ds := s.DeploymentsByApp(app)
	if len(ds) == 0 {
		return nil
	}
	return ds[len(ds)-1]
}

// SpecOf returns the spec of the given version in app.Versions, or nil if
// the app is nil or has no such version. The spec is shared with app.
func SpecOf(app *pb.App, version uint64) *pb.AppSpec {
	if app == nil {
		return nil
	}
	for _, v := range app.Versions {
		if v.GetVersion() == version {
			return v.Spec
		}
	}
	return nil
}

// first returns the object that the index maps args to. Lookups with the
// store's own schema fail only on a programming mistake, which the tests
// catch, so the error is returned only for callers that write.
func first[T any](txn *memdb.Txn, table, index string, args ...any) (T, error) {
	var zero T
	raw, err := txn.First(table, index, args...)
	if err != nil || raw == nil {
		return zero, err
	}
	return raw.(T), nil
}

// all returns every object that the index maps args to, in index order.
func all[T any](txn *memdb.Txn, table, index string, args ...any) []T {
	it, err := txn.Get(table, index, args...)
	if err != nil {
		return nil
	}
	var out []T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(T))
	}
	return out
}

// sortTasks sorts by id. Secondary indexes already iterate in id order,
// but that is a memdb detail this package does not want to lean on.
func sortTasks(ts []*pb.Task) []*pb.Task {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Id < ts[j].Id })
	return ts
}
