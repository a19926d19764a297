package deploy

import (
	"fmt"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// RestartDelay is how long a task that exited stays in place before the
// reconciler replaces it, so that a crash loop cannot spin.
const RestartDelay = 2 * time.Second

// reconcile keeps an app without a running deployment at its replica
// count on its current version.
//
// Tasks of the current version on down nodes are replaced at once; those
// that exited are replaced RestartDelay after they finished and hold
// their slot until then. Missing replicas are placed, surplus ones stopped
// newest first, and tasks of other versions stopped, except after a failed
// deployment (last): then the app holds its mix of versions until the
// user deploys again or rolls back. Tasks on draining nodes move (see
// drain).
func (e *Engine) reconcile(snap *fsm.Snapshot, app *pb.App, last *pb.Deployment,
	now time.Time) *plan {
	v := newView(snap, now)
	p := newPlan(app.GetName(), now)
	spec := fsm.SpecOf(app, app.GetVersion())
	if spec == nil {
		e.log.Error("current version missing", "app", app.GetName(), "version", app.GetVersion())
		return p
	}
	hold := last != nil && last.GetStatus() == pb.DeploymentFailed

	m := newMatcher(spec)
	var live, moving []*pb.Task
	waiting := 0
	for _, t := range v.running(app.GetName()) {
		switch {
		case !m.match(t) && !hold:
			p.stopTask(t, fmt.Sprintf("superseded by version %d", app.GetVersion()))
		case v.lost(t):
			p.stopTask(t, "node down")
		case exited(t) && now.Sub(time.Unix(0, t.GetFinishedAt())) >= RestartDelay:
			p.stopTask(t, "task "+t.GetState())
		case exited(t):
			waiting++
		case v.moving(t):
			moving = append(moving, t)
		default:
			live = append(live, t)
		}
	}

	replicas := int(spec.GetReplicas())
	if len(moving) > 0 {
		e.drain(v, p, app.GetVersion(), spec, live, moving, waiting)
		return p
	}
	if surplus := len(live) - replicas; surplus > 0 {
		byAge(live)
		for _, t := range live[len(live)-surplus:] {
			p.stopTask(t, "scaled down")
		}
	}
	e.place(v, p, app.GetVersion(), spec, replicas-len(live)-waiting, "")
	return p
}

// drain moves the tasks of draining nodes (moving) away, start first, in
// batches of the app's batch_size: while every task that stays (live) is
// counted healthy (healthy for min_healthy_time), it stops the moving
// tasks that exceed replicas (those not serving first, then the oldest)
// and places up to batch_size replacements on other nodes. A moving task
// is thus stopped only when a counted-healthy replacement takes its
// place, and the app never has fewer healthy tasks than it had up to
// replicas. Replicas missing for other reasons are placed at once.
//
// TODO: a staying task that never turns healthy holds the drain forever;
// a drain deadline, as deployments have, would end the wait.
func (e *Engine) drain(v *view, p *plan, version uint64, spec *pb.AppSpec,
	live, moving []*pb.Task, waiting int) {
	pol := policyOf(spec.GetUpdate())
	replicas := int(spec.GetReplicas())
	want := replicas - len(live) - len(moving) - waiting

	gated := true
	for _, t := range live {
		if !countedHealthy(t, pol, v.now) {
			gated = false
			break
		}
	}
	if gated {
		order(moving)
		surplus := min(max(len(live)+len(moving)-replicas, 0), len(moving))
		for _, t := range moving[:surplus] {
			p.stopTask(t, "node draining")
		}
		if extra := len(live) - replicas; extra > 0 {
			byAge(live)
			for _, t := range live[len(live)-extra:] {
				p.stopTask(t, "scaled down")
			}
		}
		want = max(want, min(pol.batch, replicas-len(live)))
	}
	e.place(v, p, version, spec, want, "")
}
