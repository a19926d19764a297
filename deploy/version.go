package deploy

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Defaults for update settings left zero in a spec.
const (
	DefaultBatchSize        = 1
	DefaultHealthyDeadline  = 5 * time.Minute
	DefaultProgressDeadline = 10 * time.Minute
)

// policy is an UpdateSpec with defaults applied.
type policy struct {
	batch            int
	minHealthy       time.Duration
	healthyDeadline  time.Duration
	progressDeadline time.Duration
	autoRollback     bool
}

func policyOf(u *pb.UpdateSpec) policy {
	p := policy{
		batch:            int(u.GetBatchSize()),
		minHealthy:       time.Duration(u.GetMinHealthyTime()),
		healthyDeadline:  time.Duration(u.GetHealthyDeadline()),
		progressDeadline: time.Duration(u.GetProgressDeadline()),
		autoRollback:     u.GetAutoRollback(),
	}
	if p.batch <= 0 {
		p.batch = DefaultBatchSize
	}
	if p.healthyDeadline <= 0 {
		p.healthyDeadline = DefaultHealthyDeadline
	}
	if p.progressDeadline <= 0 {
		p.progressDeadline = DefaultProgressDeadline
	}
	return p
}

// NewVersion returns the command that deploys spec as the next version of
// app (nil for an app that does not exist yet), and whether anything
// changed. A spec equal to the current one changes nothing (nil, false).
//
// A new app gets version 1, already stable, and no deployment: the
// reconciler places every replica at once. A spec that differs from the
// current one only in replicas gets a new version and no deployment: the
// reconciler scales and no task restarts. Any other change gets version
// N+1 and a running deployment from the current version to it.
func NewVersion(app *pb.App, spec *pb.AppSpec, now time.Time,
	newID func() string) (*pb.DeployAppCmd, bool) {
	at := now.UnixNano()
	spec = proto.Clone(spec).(*pb.AppSpec)
	if app == nil {
		return &pb.DeployAppCmd{
			App: &pb.App{
				Name:          spec.GetName(),
				Version:       1,
				StableVersion: 1,
				Versions:      []*pb.AppVersion{{Version: 1, Spec: spec, CreatedAt: at}},
				CreatedAt:     at,
			},
			At: at,
		}, true
	}

	cur := fsm.SpecOf(app, app.GetVersion())
	if proto.Equal(cur, spec) {
		return nil, false
	}
	next := proto.Clone(app).(*pb.App)
	v := latestVersion(app) + 1
	next.Versions = append(next.Versions, &pb.AppVersion{Version: v, Spec: spec, CreatedAt: at})
	next.Version = v
	from := rollbackTarget(app)
	next.Versions = pruneVersions(next.Versions, next.StableVersion, from)
	cmd := &pb.DeployAppCmd{App: next, ExpectedVersion: app.GetVersion(), At: at}

	if sameTasks(cur, spec) {
		if app.GetStableVersion() == app.GetVersion() {
			next.StableVersion = v
		}
		return cmd, true
	}
	cmd.Deployment = newDeployment(newID(), app.GetName(), from, v, spec, now)
	return cmd, true
}

// rollbackTarget is the version a new deployment of app starts from, and
// so the one an automatic rollback returns to: the current version, or,
// when that one never became stable (its deployment is still running or
// failed without a rollback), the last stable version.
func rollbackTarget(app *pb.App) uint64 {
	stable := app.GetStableVersion()
	if stable != 0 && stable != app.GetVersion() && fsm.SpecOf(app, stable) != nil {
		return stable
	}
	return app.GetVersion()
}

// MaxVersionHistory is how many of its newest versions an app keeps. Each
// deploy writes the whole app, history included, into the Raft log, so
// the history must not grow without bound. The stable version and the
// version a deployment starts from are kept besides, whatever their age:
// Rollback and an automatic rollback go back to them.
const MaxVersionHistory = 10

// pruneVersions returns the newest MaxVersionHistory of versions (which
// are in ascending order) and the versions in keep, in the same order.
func pruneVersions(versions []*pb.AppVersion, keep ...uint64) []*pb.AppVersion {
	if len(versions) <= MaxVersionHistory {
		return versions
	}
	cut := len(versions) - MaxVersionHistory
	out := make([]*pb.AppVersion, 0, MaxVersionHistory+len(keep))
	for i, av := range versions {
		if i >= cut || slices.Contains(keep, av.GetVersion()) {
			out = append(out, av)
		}
	}
	return out
}

// ErrNoRollbackTarget is returned by Rollback for an app without an older
// version to go back to. Its text is the whole reason, after the app.
var ErrNoRollbackTarget = errors.New("no older version to roll back to")

// Rollback returns the command that moves app back to its stable version,
// or, when the current version is the stable one, to the newest older
// version whose tasks differ. It stores no new version: the app's version
// pointer moves and a deployment with manual_rollback rolls it out.
// The error wraps fsm.ErrAppNotFound or ErrNoRollbackTarget.
func Rollback(app *pb.App, now time.Time, newID func() string) (*pb.DeployAppCmd, error) {
	if app == nil {
		return nil, fmt.Errorf("rollback: %w", fsm.ErrAppNotFound)
	}
	cur := fsm.SpecOf(app, app.GetVersion())
	target := app.GetStableVersion()
	if target == app.GetVersion() || fsm.SpecOf(app, target) == nil {
		target = 0
		for _, v := range app.GetVersions() {
			if v.GetVersion() < app.GetVersion() && v.GetVersion() > target && !sameTasks(v.GetSpec(), cur) {
				target = v.GetVersion()
			}
		}
	}
	if target == 0 {
		return nil, fmt.Errorf("app %q: %w", app.GetName(), ErrNoRollbackTarget)
	}

	next := proto.Clone(app).(*pb.App)
	next.Version = target
	d := newDeployment(newID(), app.GetName(), app.GetVersion(), target, fsm.SpecOf(app, target), now)
	d.ManualRollback = true
	d.Description = fmt.Sprintf("rollback to version %d", target)
	return &pb.DeployAppCmd{
		App:             next,
		ExpectedVersion: app.GetVersion(),
		Deployment:      d,
		At:              now.UnixNano(),
	}, nil
}

// newDeployment returns a running deployment from one version to another
// with its first deadlines set.
func newDeployment(id, app string, from, to uint64, spec *pb.AppSpec,
	now time.Time) *pb.Deployment {
	p := policyOf(spec.GetUpdate())
	at := now.UnixNano()
	d := &pb.Deployment{
		Id:               id,
		App:              app,
		FromVersion:      from,
		ToVersion:        to,
		Status:           pb.DeploymentRunning,
		Replicas:         spec.GetReplicas(),
		BatchDeadline:    at + int64(p.healthyDeadline),
		ProgressDeadline: at + int64(p.progressDeadline),
		CreatedAt:        at,
		UpdatedAt:        at,
	}
	if u := spec.GetUpdate(); u != nil {
		d.Update = proto.Clone(u).(*pb.UpdateSpec)
	}
	return d
}

// latestVersion is the highest version number the app ever had.
func latestVersion(app *pb.App) uint64 {
	var v uint64
	for _, av := range app.GetVersions() {
		v = max(v, av.GetVersion())
	}
	return v
}

// OfCurrentVersion reports whether task t runs the app's current version:
// it carries that version number, or a spec that differs from the
// current one in replicas at most (a replicas-only version keeps the
// tasks of the version before it).
func OfCurrentVersion(app *pb.App, t *pb.Task) bool {
	if t.GetVersion() == app.GetVersion() {
		return true
	}
	cur := fsm.SpecOf(app, app.GetVersion())
	return cur != nil && t.GetSpec() != nil && sameTasks(t.GetSpec(), cur)
}

// sameTasks reports whether tasks of spec a may serve spec b unchanged:
// the specs are equal but for replicas.
func sameTasks(a, b *pb.AppSpec) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	ac := proto.Clone(a).(*pb.AppSpec)
	bc := proto.Clone(b).(*pb.AppSpec)
	ac.Replicas, bc.Replicas = 0, 0
	return proto.Equal(ac, bc)
}
