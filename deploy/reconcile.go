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
// user deploys again or rolls back.
//
// TODO: tasks on a draining node keep running; move them off once node
// draining has a command and a CLI.
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
	var live []*pb.Task
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
		default:
			live = append(live, t)
		}
	}

	replicas := int(spec.GetReplicas())
	if surplus := len(live) - replicas; surplus > 0 {
		byAge(live)
		for _, t := range live[len(live)-surplus:] {
			p.stopTask(t, "scaled down")
		}
	}
	e.place(v, p, app.GetVersion(), spec, replicas-len(live)-waiting, "")
	return p
}
