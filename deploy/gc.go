package deploy

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// KeepFailed is how many stopped, failed tasks per app are kept for
// people to inspect.
const KeepFailed = 3

// collect deletes tasks nobody needs any more: those asked to stop that
// have stopped, those asked to stop whose node has been down for longer
// than WorkerGrace (or is gone), failed ones beyond KeepFailed per app,
// and finished tasks of removed apps.
//
// A down node's worker may still run the containers of the tasks deleted
// that way, when it was cut off rather than dead: it keeps them running
// while no manager answers, and stops them when it is back and their
// tasks are no longer in its list.
// TODO: keeping those tasks, shown lost, until their worker reports them
// stopped or the node is removed (as Nomad keeps lost allocations until
// garbage collection) would let app status show the containers that may
// still run on the far side of a partition.
func (e *Engine) collect(ctx context.Context, snap *fsm.Snapshot, now time.Time) error {
	apps := make(map[string]bool)
	for _, a := range snap.Apps() {
		apps[a.GetName()] = true
	}
	v := newView(snap, now)

	var ids []string
	failed := make(map[string][]*pb.Task)
	for _, t := range snap.Tasks() {
		if t.GetDesired() != pb.DesiredStop {
			continue
		}
		switch {
		case e.nodeGone(v, t.GetNode()):
			ids = append(ids, t.GetId())
		case t.GetState() == pb.TaskStopped:
			ids = append(ids, t.GetId())
		case t.GetState() == pb.TaskFailed && !apps[t.GetApp()]:
			ids = append(ids, t.GetId())
		case t.GetState() == pb.TaskFailed:
			failed[t.GetApp()] = append(failed[t.GetApp()], t)
		}
	}
	for _, ts := range failed {
		sort.SliceStable(ts, func(i, j int) bool {
			return ts[i].GetFinishedAt() > ts[j].GetFinishedAt()
		})
		for _, t := range ts[min(KeepFailed, len(ts)):] {
			ids = append(ids, t.GetId())
		}
	}
	if len(ids) == 0 {
		return nil
	}

	sort.Strings(ids)
	cmd := &pb.DeleteTasksCmd{Ids: ids}
	if _, err := e.propose(ctx, fsm.DeleteTasksType, cmd); err != nil {
		return fmt.Errorf("deleting %d tasks: %w", len(ids), err)
	}
	e.log.Debug("tasks deleted", "count", len(ids))
	return nil
}

// nodeGone reports whether a node is missing or has been down for longer
// than WorkerGrace: its tasks will never report again.
func (e *Engine) nodeGone(v *view, name string) bool {
	n := v.nodes[name]
	if n == nil {
		return true
	}
	down := v.now.Sub(time.Unix(0, n.GetStatusChangedAt()))
	return n.GetStatus() == pb.NodeDown && down > e.cfg.WorkerGrace
}
