package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// The handlers below run inside one write transaction; an error aborts
// the whole command. They may store objects from the decoded command as
// they are, since Decode made them fresh, but must clone anything read
// from the store before changing it: stored objects are shared.

func (a *applier) upsertNode(cmd *pb.UpsertNodeCmd) error {
	n := cmd.GetNode()
	if n.GetName() == "" {
		return fmt.Errorf("upsert node: no name: %w", ErrInvalid)
	}
	n.CreateIndex = a.index
	if old := a.node(n.Name); old != nil {
		n.CreateIndex = old.CreateIndex
	}
	n.ModifyIndex = a.index
	return a.insert(tableNodes, n)
}

func (a *applier) nodeStatus(cmd *pb.NodeStatusCmd) error {
	old := a.node(cmd.Name)
	if old == nil {
		return fmt.Errorf("node %q: %w", cmd.Name, ErrNodeNotFound)
	}
	n := proto.CloneOf(old)
	n.Status = cmd.Status
	n.StatusChangedAt = cmd.At
	n.ModifyIndex = a.index
	return a.insert(tableNodes, n)
}

func (a *applier) deployApp(cmd *pb.DeployAppCmd) error {
	app := cmd.GetApp()
	if app.GetName() == "" {
		return fmt.Errorf("deploy app: no name: %w", ErrInvalid)
	}

	// Check the version the leader saw when it built the command.
	old := a.app(app.Name)
	switch {
	case old == nil && cmd.ExpectedVersion != 0:
		return fmt.Errorf("app %q: expected version %d, app does not exist: %w",
			app.Name, cmd.ExpectedVersion, ErrVersionConflict)
	case old != nil && cmd.ExpectedVersion != old.Version:
		return fmt.Errorf("app %q: expected version %d, have %d: %w",
			app.Name, cmd.ExpectedVersion, old.Version, ErrVersionConflict)
	}

	app.CreateIndex = a.index
	if old != nil {
		app.CreateIndex = old.CreateIndex
	}
	app.ModifyIndex = a.index
	if err := a.insert(tableApps, app); err != nil {
		return err
	}

	// A new deployment replaces any that still runs for the app.
	d := cmd.Deployment
	if d == nil {
		return nil
	}
	if d.App == "" {
		d.App = app.Name
	}
	if d.App != app.Name {
		return fmt.Errorf("app %q: deployment %q is for app %q: %w",
			app.Name, d.Id, d.App, ErrInvalid)
	}
	reason := "superseded by deployment " + d.Id
	if err := a.failRunning(app.Name, reason, cmd.At); err != nil {
		return err
	}
	return a.upsertDeployment(d)
}

// removeApp deletes the app and its deployments; ErrAppNotFound if it is
// missing. Each task of the app with desired "run" gets desired "stop",
// stop_requested_at, stop_index and the message "app removed" (a failed
// task keeps its worker's message); tasks already asked to stop keep
// their reason. The tasks stay until their workers report them stopped
// and the leader deletes them with DeleteTasks.
func (a *applier) removeApp(cmd *pb.RemoveAppCmd) error {
	app := a.app(cmd.Name)
	if app == nil {
		return fmt.Errorf("app %q: %w", cmd.Name, ErrAppNotFound)
	}
	if err := a.txn.Delete(tableApps, app); err != nil {
		return fmt.Errorf("app %q: delete: %w", cmd.Name, err)
	}

	// The tasks stay until their workers report them stopped; the
	// leader deletes them later.
	for _, t := range all[*pb.Task](a.txn, tableTasks, indexApp, cmd.Name) {
		if t.Desired != pb.DesiredRun {
			continue
		}
		if err := a.stopTask(t, "app removed", cmd.At); err != nil {
			return err
		}
	}

	// Deployments go with the app: a new app of the same name must not
	// show the old one's rollout as its own.
	for _, d := range all[*pb.Deployment](a.txn, tableDeployments, indexApp, cmd.Name) {
		if err := a.txn.Delete(tableDeployments, d); err != nil {
			return fmt.Errorf("app %q: delete deployment %q: %w",
				cmd.Name, d.Id, err)
		}
	}
	return nil
}

func (a *applier) scaleApp(cmd *pb.ScaleAppCmd) error {
	old := a.app(cmd.Name)
	if old == nil {
		return fmt.Errorf("app %q: %w", cmd.Name, ErrAppNotFound)
	}
	if cmd.Replicas < 0 {
		return fmt.Errorf("app %q: replicas %d: %w",
			cmd.Name, cmd.Replicas, ErrInvalid)
	}

	app := proto.CloneOf(old)
	spec := SpecOf(app, app.Version)
	if spec == nil {
		return fmt.Errorf("app %q: no spec for version %d: %w",
			cmd.Name, app.Version, ErrInvalid)
	}
	spec.Replicas = cmd.Replicas
	app.ModifyIndex = a.index
	return a.insert(tableApps, app)
}

// plan inserts each task of create (an existing id is skipped), asks each
// task of stop with desired "run" to stop (stop_reason becomes its
// message unless it failed with a message of its own), takes each task
// of rotated_out that is desired "stop" out of rotation, upserts the
// deployment when its app exists, and moves the app's version pointers
// when set.
func (a *applier) plan(cmd *pb.PlanCmd) error {
	// Never place a task twice: an id that exists is skipped, so a plan
	// replayed by a new leader is harmless.
	for _, t := range cmd.Create {
		if t.GetId() == "" {
			return fmt.Errorf("plan: task without id: %w", ErrInvalid)
		}
		if a.task(t.Id) != nil {
			continue
		}
		t.CreateIndex = a.index
		t.ModifyIndex = a.index
		if err := a.insert(tableTasks, t); err != nil {
			return err
		}
	}

	for _, id := range cmd.Stop {
		t := a.task(id)
		if t == nil || t.Desired != pb.DesiredRun {
			continue
		}
		if err := a.stopTask(t, cmd.StopReason, cmd.At); err != nil {
			return err
		}
	}

	// Only a task asked to stop can leave the rotation; a stale id or
	// a second acknowledgement changes nothing.
	for _, id := range cmd.RotatedOut {
		t := a.task(id)
		if t == nil || t.Desired != pb.DesiredStop || t.OutOfRotation {
			continue
		}
		if err := a.rotateOut(t, cmd.At); err != nil {
			return err
		}
	}

	// A plan made before its app was removed must not bring the app's
	// deployment back.
	if d := cmd.Deployment; d != nil && a.app(d.App) != nil {
		if err := a.upsertDeployment(d); err != nil {
			return err
		}
	}

	if cmd.App == "" || (cmd.AppVersion == 0 && cmd.StableVersion == 0) {
		return nil
	}
	old := a.app(cmd.App)
	if old == nil {
		return fmt.Errorf("plan: app %q: %w", cmd.App, ErrAppNotFound)
	}
	app := proto.CloneOf(old)
	if cmd.AppVersion != 0 {
		app.Version = cmd.AppVersion
	}
	if cmd.StableVersion != 0 {
		app.StableVersion = cmd.StableVersion
	}
	app.ModifyIndex = a.index
	return a.insert(tableApps, app)
}

// taskReports applies each report to its task (see report) and records
// the endpoint set the node's ingress serves, when the worker sent one.
func (a *applier) taskReports(cmd *pb.TaskReportsCmd) error {
	if cmd.Node == "" {
		return fmt.Errorf("task reports: no node: %w", ErrInvalid)
	}
	if err := a.endpointsIndex(cmd.Node, cmd.EndpointsIndex); err != nil {
		return err
	}
	for _, r := range cmd.Reports {
		old := a.task(r.GetTaskId())
		// A worker speaks only for its own tasks; a report for a task
		// moved elsewhere or deleted is stale.
		if old == nil || old.Node != cmd.Node {
			continue
		}
		t := proto.CloneOf(old)
		report(t, r, cmd.At)
		if proto.Equal(t, old) {
			continue // nothing new: spare the watchers a wake-up
		}
		t.ModifyIndex = a.index
		if err := a.insert(tableTasks, t); err != nil {
			return err
		}
	}
	return nil
}

// endpointsIndex sets the node's endpoints_index to index. Zero (an
// older worker, or none served yet) and an unknown node change nothing.
func (a *applier) endpointsIndex(name string, index uint64) error {
	old := a.node(name)
	if index == 0 || old == nil || old.EndpointsIndex == index {
		return nil
	}
	n := proto.CloneOf(old)
	n.EndpointsIndex = index
	n.ModifyIndex = a.index
	return a.insert(tableNodes, n)
}

// report applies a worker's report to t, a private copy.
func report(t *pb.Task, r *pb.TaskReport, at int64) {
	// TODO: an empty state keeps the old one; reject it once workers
	// are known to always send one.
	if r.State != "" {
		if finished(r.State) && !finished(t.State) {
			t.FinishedAt = at
		}
		t.State = r.State
	}
	t.ExitCode = r.ExitCode
	// A task the leader asked to stop keeps the leader's reason until
	// the worker has something of its own to say.
	if r.Message != "" || t.Desired != pb.DesiredStop {
		t.Message = r.Message
	}

	switch {
	case r.Healthy && !t.Healthy:
		t.Healthy = true
		t.HealthySince = at
		t.EverHealthy = true
	case !r.Healthy:
		t.Healthy = false
		t.HealthySince = 0
	}
}

func finished(state string) bool {
	return state == pb.TaskStopped || state == pb.TaskFailed
}

func (a *applier) deleteTasks(cmd *pb.DeleteTasksCmd) error {
	for _, id := range cmd.Ids {
		t := a.task(id)
		if t == nil {
			continue
		}
		if err := a.txn.Delete(tableTasks, t); err != nil {
			return fmt.Errorf("task %q: delete: %w", id, err)
		}
	}
	return nil
}

func (a *applier) setMeta(cmd *pb.SetMetaCmd) error {
	if cmd.Meta == nil {
		return fmt.Errorf("set meta: no meta: %w", ErrInvalid)
	}
	return a.insert(tableMeta,
		&metaEntry{Key: metaClusterMeta, Cluster: cmd.Meta})
}

// stopTask sets desired "stop" on a stored task, with reason as its
// message unless the task failed and its worker said why: that message
// is what people need to see. stop_index records this entry, so that
// the leader can tell which endpoint sets a worker serves still hold
// the task.
func (a *applier) stopTask(old *pb.Task, reason string, at int64) error {
	t := proto.CloneOf(old)
	t.Desired = pb.DesiredStop
	t.StopRequestedAt = at
	t.StopIndex = a.index
	if t.State != pb.TaskFailed || t.Message == "" {
		t.Message = reason
	}
	t.ModifyIndex = a.index
	return a.insert(tableTasks, t)
}

// rotateOut marks a stored task out of rotation at the leader's time.
func (a *applier) rotateOut(old *pb.Task, at int64) error {
	t := proto.CloneOf(old)
	t.OutOfRotation = true
	t.OutOfRotationAt = at
	t.ModifyIndex = a.index
	return a.insert(tableTasks, t)
}

// failRunning marks every running deployment of an app failed.
func (a *applier) failRunning(app, reason string, at int64) error {
	ds := all[*pb.Deployment](a.txn, tableDeployments, indexApp, app)
	for _, old := range ds {
		if old.Status != pb.DeploymentRunning {
			continue
		}
		d := proto.CloneOf(old)
		d.Status = pb.DeploymentFailed
		d.Description = reason
		if at != 0 {
			d.UpdatedAt = at
		}
		d.ModifyIndex = a.index
		if err := a.insert(tableDeployments, d); err != nil {
			return err
		}
	}
	return nil
}

// upsertDeployment stores d, a message of the command, keeping the
// create_index of the deployment it replaces.
func (a *applier) upsertDeployment(d *pb.Deployment) error {
	if d.Id == "" {
		return fmt.Errorf("deployment of app %q: no id: %w", d.App, ErrInvalid)
	}
	d.CreateIndex = a.index
	if old := a.deployment(d.Id); old != nil {
		d.CreateIndex = old.CreateIndex
	}
	d.ModifyIndex = a.index
	return a.insert(tableDeployments, d)
}

func (a *applier) node(name string) *pb.Node {
	n, _ := first[*pb.Node](a.txn, tableNodes, indexID, name)
	return n
}

func (a *applier) app(name string) *pb.App {
	app, _ := first[*pb.App](a.txn, tableApps, indexID, name)
	return app
}

func (a *applier) task(id string) *pb.Task {
	t, _ := first[*pb.Task](a.txn, tableTasks, indexID, id)
	return t
}

func (a *applier) deployment(id string) *pb.Deployment {
	d, _ := first[*pb.Deployment](a.txn, tableDeployments, indexID, id)
	return d
}

func (a *applier) insert(table string, obj any) error {
	if err := a.txn.Insert(table, obj); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}
