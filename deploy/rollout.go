package deploy

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// rollout decides one step of the running deployment d0 of app.
//
// The target is d.to_version, or d.from_version while rolling back; "new"
// tasks serve the target's spec, "old" ones anything else. Batches start
// first: while every live new task is counted healthy (healthy for
// min_healthy_time), the step stops as many old tasks as exceed replicas
// (least useful, then oldest first) and places the next batch of up to
// batch_size new tasks, so at most replicas+batch_size tasks run. A new
// task that fails, or turns unhealthy after it was healthy, fails the
// deployment; so does a batch not healthy by batch_deadline or no progress
// by progress_deadline. With auto_rollback the same deployment then
// targets from_version, keeping the failure in rollback_reason for its
// final description; otherwise it ends failed. Tasks on down nodes are
// replaced, never counted as failures; tasks on draining nodes count as
// old, whatever their version.
//
// Every decision is derived from the store, so any leader may take the
// next step.
func (e *Engine) rollout(snap *fsm.Snapshot, app *pb.App, d0 *pb.Deployment, now time.Time) *plan {
	v := newView(snap, now)
	p := newPlan(app.GetName(), now)
	d := proto.Clone(d0).(*pb.Deployment)
	pol := policyOf(d.GetUpdate())
	at := now.UnixNano()

	target := d.GetToVersion()
	if d.GetRollingBack() {
		target = d.GetFromVersion()
	}
	spec := fsm.SpecOf(app, target)
	if spec == nil {
		d.Status = pb.DeploymentFailed
		d.Description = fmt.Sprintf("version %d of the app is gone", target)
		d.UpdatedAt = at
		p.deployment = d
		return p
	}

	// Follow a scale of the target version during the rollout.
	if cur := fsm.SpecOf(app, app.GetVersion()); sameTasks(cur, spec) {
		d.Replicas = cur.GetReplicas()
	}
	replicas := int(d.GetReplicas())

	// Sort the tasks: new ones live, healthy or failed; old ones live.
	m := newMatcher(spec)
	var live, healthy, old []*pb.Task
	var failures []string
	for _, t := range v.running(app.GetName()) {
		switch {
		case v.lost(t):
			p.stopTask(t, "node down")
		case !m.match(t) || v.moving(t):
			// A task on a draining node is replaced like an old one.
			old = append(old, t)
		case exited(t) || (t.GetEverHealthy() && !t.GetHealthy()):
			p.stopTask(t, fmt.Sprintf("failed in deployment %s", d.GetId()))
			failures = append(failures, failureOf(t))
		default:
			live = append(live, t)
			if countedHealthy(t, pol, now) {
				healthy = append(healthy, t)
			}
		}
	}
	d.Failures += int32(len(failures))

	progressed := len(healthy) > int(d.GetHealthy())
	d.Healthy = int32(len(healthy))
	batchHealthy := len(healthy) == len(live)
	failure := ""
	if len(failures) > 0 {
		failure = failures[0]
		if len(failures) > 1 {
			failure += fmt.Sprintf(" (and %d more)", len(failures)-1)
		}
	}

	// Advance: drain old tasks beyond replicas, place the next batch.
	done := false
	if failure == "" && batchHealthy {
		order(old)
		surplus := min(max(len(live)+len(old)-replicas, 0), len(old))
		for _, t := range old[:surplus] {
			p.stopTask(t, fmt.Sprintf("replaced by version %d", target))
		}
		old = old[surplus:]
		if extra := len(live) - replicas; extra > 0 {
			byAge(live)
			for _, t := range live[len(live)-extra:] {
				p.stopTask(t, "scaled down")
			}
		}

		want := min(pol.batch, replicas-len(live))
		placed := e.place(v, p, target, spec, want, d.GetId())
		d.Placed += int32(placed)
		progressed = progressed || surplus > 0 || placed > 0
		done = want <= 0 && len(old) == 0 && len(healthy) >= replicas
	}

	// Deadlines count only while nothing moves.
	switch {
	case failure != "":
	case progressed:
		d.BatchDeadline = at + int64(pol.healthyDeadline)
		d.ProgressDeadline = at + int64(pol.progressDeadline)
	case !batchHealthy && at > d.GetBatchDeadline():
		failure = fmt.Sprintf("batch not healthy within %s", pol.healthyDeadline)
	case at > d.GetProgressDeadline():
		failure = fmt.Sprintf("no progress within %s", pol.progressDeadline)
	}

	switch {
	case failure != "":
		e.fail(p, d, pol, failure)
	case done && d.GetRollingBack():
		d.Status = pb.DeploymentRolledBack
		d.Description = fmt.Sprintf("rolled back to version %d", target)
		if r := d.GetRollbackReason(); r != "" {
			d.Description += " after: " + r
		}
	case done:
		d.Status = pb.DeploymentSuccessful
		d.Description = fmt.Sprintf("version %d is running", target)
		p.stableVersion = target
		if sameTasks(fsm.SpecOf(app, app.GetVersion()), spec) {
			p.stableVersion = app.GetVersion()
		}
	}

	if !proto.Equal(d, d0) {
		d.UpdatedAt = at
		p.deployment = d
	}
	return p
}

// fail rolls the deployment back to from_version when it may, and ends it
// failed otherwise. Stops already in p stay.
func (e *Engine) fail(p *plan, d *pb.Deployment, pol policy, reason string) {
	at := p.now.UnixNano()
	if pol.autoRollback && !d.GetRollingBack() && d.GetFromVersion() != 0 {
		d.RollingBack = true
		d.RollbackReason = reason // the description changes; this stays
		d.Description = "rolling back: " + reason
		d.Placed, d.Healthy = 0, 0
		d.BatchDeadline = at + int64(pol.healthyDeadline)
		d.ProgressDeadline = at + int64(pol.progressDeadline)
		p.appVersion = d.GetFromVersion()
		e.log.Warn("deployment failed, rolling back", "app", p.app,
			"deployment", d.GetId(), "reason", reason)
		return
	}
	d.Status = pb.DeploymentFailed
	d.Description = reason
	if d.GetRollingBack() {
		d.Description = "rollback failed: " + reason
	}
}

// countedHealthy reports whether t has passed its checks for
// min_healthy_time.
func countedHealthy(t *pb.Task, pol policy, now time.Time) bool {
	if !t.GetHealthy() {
		return false
	}
	return now.Sub(time.Unix(0, t.GetHealthySince())) >= pol.minHealthy
}

// failureOf describes why a new task counts as failed. The exit code is
// shown only for a task that ran: a task whose pull or start failed has
// none, and its message says why.
func failureOf(t *pb.Task) string {
	what := "turned unhealthy"
	switch {
	case !exited(t):
	case ran(t):
		what = fmt.Sprintf("%s (exit code %d)", t.GetState(), t.GetExitCode())
	default:
		what = t.GetState()
	}
	if t.GetMessage() != "" {
		what += ": " + t.GetMessage()
	}
	return fmt.Sprintf("task %s on %s %s", t.GetId(), t.GetNode(), what)
}

// ran reports whether an exited task's container ran: it exited with a
// code, stopped, or was healthy once. A task that failed with code 0 and
// was never healthy may have run too; its message then says so.
func ran(t *pb.Task) bool {
	return t.GetExitCode() != 0 || t.GetState() == pb.TaskStopped ||
		t.GetEverHealthy()
}

// order sorts old tasks in the order they should be stopped: those not
// serving (exited or unhealthy) first, then the oldest.
func order(ts []*pb.Task) {
	serving := func(t *pb.Task) bool { return !exited(t) && t.GetHealthy() }
	sort.SliceStable(ts, func(i, j int) bool {
		si, sj := serving(ts[i]), serving(ts[j])
		if si != sj {
			return !si
		}
		return older(ts[i], ts[j])
	})
}
