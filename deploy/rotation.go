package deploy

import (
	"context"
	"strings"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// aliveMembers returns the names of the gossip members seen alive.
func (e *Engine) aliveMembers() map[string]bool {
	alive := make(map[string]bool)
	for _, m := range e.cfg.Liveness.Members() {
		if m.Alive {
			alive[m.Meta.Name] = true
		}
	}
	return alive
}

// rotate adds to p the tasks of ts that were asked to stop, still run and
// may now leave the ingress and DNS rotation. A task leaves when every
// worker that is alive in gossip and not down serves an endpoint set at
// least as new as the task's stop (endpoints_index >= stop_index), or,
// with a warning naming the workers that did not confirm, once
// RotationBound has passed since its stop was asked. A task never healthy
// was in no endpoint set and leaves at once. A task that exited needs no
// rotation: garbage collection may delete it.
//
// Everything comes from the store and gossip, so a new leader carries on
// where the old one stopped.
func (e *Engine) rotate(v *view, p *plan, ts []*pb.Task, alive map[string]bool) {
	for _, t := range ts {
		if t.GetDesired() != pb.DesiredStop || t.GetOutOfRotation() || exited(t) {
			continue
		}
		if !t.GetEverHealthy() {
			p.rotatedOut = append(p.rotatedOut, t.GetId())
			continue
		}
		lagging := v.lagging(t.GetStopIndex(), alive)
		if len(lagging) == 0 {
			p.rotatedOut = append(p.rotatedOut, t.GetId())
			continue
		}
		waited := v.now.Sub(time.Unix(0, t.GetStopRequestedAt()))
		if waited <= e.cfg.RotationBound {
			continue
		}
		e.warnOnce("rotation/"+t.GetId(), "task taken out of rotation without every worker's confirmation",
			"app", t.GetApp(), "task_id", t.GetId(), "node", t.GetNode(),
			"bound", e.cfg.RotationBound, "workers", strings.Join(lagging, ","))
		p.rotatedOut = append(p.rotatedOut, t.GetId())
	}
}

// lagging returns the workers, by name, that are alive in gossip and not
// down but serve endpoints older than index.
func (v *view) lagging(index uint64, alive map[string]bool) []string {
	var out []string
	for _, n := range v.snap.Nodes() {
		if n.GetRole() != pb.RoleWorker || n.GetStatus() == pb.NodeDown ||
			!alive[n.GetName()] {
			continue
		}
		if n.GetEndpointsIndex() < index {
			out = append(out, n.GetName())
		}
	}
	return out
}

// rotateOrphans takes tasks of removed apps out of rotation, in a plan
// of their own: no app step sees them.
func (e *Engine) rotateOrphans(ctx context.Context, snap *fsm.Snapshot, now time.Time,
	alive map[string]bool) error {
	apps := make(map[string]bool)
	for _, a := range snap.Apps() {
		apps[a.GetName()] = true
	}
	var orphans []*pb.Task
	for _, t := range snap.Tasks() {
		if !apps[t.GetApp()] {
			orphans = append(orphans, t)
		}
	}
	p := newPlan("", now)
	e.rotate(newView(snap, now), p, orphans, alive)
	return e.submit(ctx, p)
}
