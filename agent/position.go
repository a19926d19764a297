package agent

// position orders the lists a worker receives from managers: assignment
// lists and endpoint sets. Within one history of the cluster's state a
// higher Raft index is newer, and a list older than one applied comes
// from a replica that lags behind. A snapshot restore starts a new
// history: after every manager was lost, a cluster restored from a file
// begins a new log whose indexes may be below those a worker saw, so the
// restore epoch (ClusterMeta.restore_epoch, the restoring leader's clock)
// orders before the index.
type position struct {
	epoch uint64
	index uint64
}

// before reports whether p is older than q.
func (p position) before(q position) bool {
	if p.epoch != q.epoch {
		return p.epoch < q.epoch
	}
	return p.index < q.index
}
