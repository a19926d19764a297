package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Engine is the leader's rollout engine and reconciler. Create it with
// New, switch it on and off with SetEnabled as leadership comes and goes,
// or drive it by hand with Step in tests.
type Engine struct {
	cfg Config
	log hclog.Logger

	// enabledAt is when the engine was last enabled (or created), or
	// found a restored state, in Unix nanoseconds of cfg.Clock. Workers
	// are given WorkerGrace from then before anyone is marked down.
	enabledAt atomic.Int64

	// identity is the cluster ID and restore epoch the last step
	// saw ("" before the first): a change means a snapshot restore.
	identity atomic.Pointer[string]

	// mu guards cancel and done: the loop of the current term.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	// enabled, steps and proposals are what Stats reports: whether the
	// loop runs, how many passes Step has made and how many commands
	// the engine has handed to the Proposer since New.
	enabled   atomic.Bool
	steps     atomic.Uint64
	proposals atomic.Uint64

	// warnMu guards warned: when a warning that repeats every step was
	// last logged, per key. Only logging depends on it.
	warnMu sync.Mutex
	warned map[string]time.Time
}

// New returns a disabled Engine. Zero fields of cfg take the values of
// DefaultConfig; Step fails with ErrInvalidConfig while a required field
// is missing.
func New(cfg Config) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{cfg: cfg, log: cfg.Logger.Named("deploy"), warned: make(map[string]time.Time)}
	e.enabledAt.Store(cfg.Clock.Now().UnixNano())
	return e
}

// SetEnabled starts the engine's loop when on (a no-op if it runs) with a
// fresh context, and stops it when off, returning once the loop has
// exited. The caller must have waited for a Raft barrier before enabling.
func (e *Engine) SetEnabled(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()

	if !on {
		if e.cancel == nil {
			return
		}
		e.cancel()
		<-e.done
		e.cancel, e.done = nil, nil
		e.enabled.Store(false)
		e.log.Info("rollout engine disabled")
		return
	}
	if e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	e.enabledAt.Store(e.cfg.Clock.Now().UnixNano())
	e.enabled.Store(true)
	e.log.Info("rollout engine enabled")
	go e.run(ctx, e.done)
}

// Stats is what an Engine has done since New: whether its loop runs now
// (leadership), how many passes Step has made and how many commands it
// has proposed, whether or not they were committed. On a manager that
// is not the leader Enabled is false and the counters stand still.
type Stats struct {
	Enabled   bool
	Steps     uint64
	Proposals uint64
}

// Stats returns the engine's counters. Safe to call at any time.
func (e *Engine) Stats() Stats {
	return Stats{
		Enabled:   e.enabled.Load(),
		Steps:     e.steps.Load(),
		Proposals: e.proposals.Load(),
	}
}

// propose is the one place the engine proposes a command: it counts it
// and hands it to the Proposer.
func (e *Engine) propose(ctx context.Context, t fsm.CommandType,
	msg proto.Message) (uint64, error) {
	e.proposals.Add(1)
	return e.cfg.Proposer.Propose(ctx, t, msg)
}

// run steps on every store change and every Interval until ctx ends.
func (e *Engine) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(e.cfg.Interval)
	defer tick.Stop()

	for {
		// Take the channel before stepping so no change is missed.
		changed := e.cfg.Store.Changed()
		if err := e.Step(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("step failed, will retry", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// Step makes one pass: cluster meta, manager nodes, worker liveness, one
// plan per app (with the app's tasks that may leave the rotation), one
// for the rotation of removed apps' tasks and garbage collection, each
// proposed as needed. It reads
// the store afresh before each app so that the plans of one step see each
// other's placements. Errors of the parts are joined; a failed part is
// decided again on the next Step.
func (e *Engine) Step(ctx context.Context) error {
	if err := e.cfg.Validate(); err != nil {
		return err
	}
	e.steps.Add(1)
	now := e.cfg.Clock.Now()
	snap := e.cfg.Store.Snapshot()

	errs := []error{
		e.ensureMeta(ctx, snap),
		e.syncManagers(ctx, snap, now),
		e.checkWorkers(ctx, snap, now),
	}

	alive := e.aliveMembers()
	for _, app := range e.cfg.Store.Snapshot().Apps() {
		if ctx.Err() != nil {
			break
		}
		if err := e.stepApp(ctx, app.GetName(), now, alive); err != nil {
			errs = append(errs, fmt.Errorf("app %q: %w", app.GetName(), err))
		}
	}

	errs = append(errs,
		e.rotateOrphans(ctx, e.cfg.Store.Snapshot(), now, alive),
		e.collect(ctx, e.cfg.Store.Snapshot(), now),
		ctx.Err())
	return errors.Join(errs...)
}

// stepApp advances the app's running deployment, or reconciles the app,
// and takes the app's stopping tasks out of rotation as they may leave.
func (e *Engine) stepApp(ctx context.Context, name string, now time.Time,
	alive map[string]bool) error {
	snap := e.cfg.Store.Snapshot()
	app := snap.App(name)
	if app == nil {
		return nil
	}
	var p *plan
	d := snap.LatestDeployment(name)
	if d != nil && d.GetStatus() == pb.DeploymentRunning {
		p = e.rollout(snap, app, d, now)
	} else {
		p = e.reconcile(snap, app, d, now)
	}
	e.rotate(newView(snap, now), p, snap.TasksByApp(name), alive)
	return e.submit(ctx, p)
}

// submit proposes a plan if it decides anything.
func (e *Engine) submit(ctx context.Context, p *plan) error {
	if p.empty() {
		return nil
	}
	cmd := p.command()
	log := e.log.With("app", cmd.GetApp())
	if _, err := e.propose(ctx, fsm.PlanType, cmd); err != nil {
		if d := cmd.GetDeployment(); d != nil && d.GetStatus() != pb.DeploymentRunning {
			// The entry may still commit (the term ended or the reply
			// was lost while proposing), and then no leader logs the
			// line below: say so, once, where it was decided.
			log.Info("deployment finish proposed, outcome unknown",
				"deployment", d.GetId(), "status", d.GetStatus(), "error", err)
		}
		return fmt.Errorf("proposing plan: %w", err)
	}
	if len(cmd.GetCreate()) > 0 || len(cmd.GetStop()) > 0 {
		log.Debug("plan applied", "create", len(cmd.GetCreate()),
			"stop", len(cmd.GetStop()), "reason", cmd.GetStopReason())
	}
	if len(cmd.GetRotatedOut()) > 0 {
		log.Debug("tasks out of rotation", "task_ids", cmd.GetRotatedOut())
	}
	if d := cmd.GetDeployment(); d != nil && d.GetStatus() != pb.DeploymentRunning {
		log.Info("deployment finished", "deployment", d.GetId(),
			"status", d.GetStatus(), "description", d.GetDescription())
	}
	return nil
}

// ensureMeta creates the cluster ID and join tokens once, and raises
// the cluster's min_voters to this manager's MinVoters.
func (e *Engine) ensureMeta(ctx context.Context, snap *fsm.Snapshot) error {
	meta := snap.Meta()
	minVoters := uint32(max(e.cfg.MinVoters, 0))
	if meta.GetWorkerToken() != "" && meta.GetMinVoters() >= minVoters {
		return nil
	}
	next := proto.Clone(meta).(*pb.ClusterMeta)
	if next.ClusterId == "" {
		next.ClusterId = randomHex(16)
	}
	created := next.WorkerToken == ""
	if created {
		next.WorkerToken = "HMW-" + randomHex(32)
		next.ManagerToken = "HMM-" + randomHex(32)
	}
	next.MinVoters = max(next.MinVoters, minVoters)
	if _, err := e.propose(ctx, fsm.SetMetaType, &pb.SetMetaCmd{Meta: next}); err != nil {
		// As for a deployment's finish: it may still commit.
		e.log.Info("cluster meta proposed, outcome unknown",
			"cluster_id", next.ClusterId, "error", err)
		return fmt.Errorf("proposing cluster meta: %w", err)
	}
	if created {
		e.log.Info("cluster meta created", "cluster_id", next.ClusterId,
			"min_voters", next.MinVoters)
	} else {
		e.log.Info("cluster min_voters raised", "min_voters", next.MinVoters)
	}
	return nil
}

// syncManagers records every alive manager seen in gossip as a ready
// manager node, when the store does not already say so.
// TODO: a dead manager stays ready here; mark it from raftnode's view of
// the servers once the engine can see it.
func (e *Engine) syncManagers(ctx context.Context, snap *fsm.Snapshot, now time.Time) error {
	var errs []error
	for _, m := range e.cfg.Liveness.Members() {
		if !m.Alive || m.Meta.Role != pb.RoleManager {
			continue
		}
		want := &pb.Node{
			Name:     m.Meta.Name,
			Role:     pb.RoleManager,
			Address:  m.Meta.Address,
			RpcPort:  int32(m.Meta.RPCPort),
			HttpPort: int32(m.Meta.HTTPPort),
			RaftPort: int32(m.Meta.RaftPort),
			// Meta has no gossip port: the member's address does.
			GossipPort: gossipPort(m.Addr),
			Status:     pb.NodeReady,
		}
		cur := snap.Node(m.Meta.Name)
		if want.GossipPort == 0 {
			want.GossipPort = cur.GetGossipPort()
		}
		if sameManager(cur, want) {
			continue
		}
		want.RegisteredAt = now.UnixNano()
		want.StatusChangedAt = now.UnixNano()
		if cur != nil {
			want.RegisteredAt = cur.GetRegisteredAt()
			if cur.GetStatus() == pb.NodeReady {
				want.StatusChangedAt = cur.GetStatusChangedAt()
			}
		}
		cmd := &pb.UpsertNodeCmd{Node: want}
		if _, err := e.propose(ctx, fsm.UpsertNodeType, cmd); err != nil {
			errs = append(errs, fmt.Errorf("manager %q: %w", want.Name, err))
			continue
		}
		e.log.Info("manager recorded", "node", want.Name, "address", want.Address)
	}
	return errors.Join(errs...)
}

// maxWarned is how many warning keys warnOnce keeps before it forgets
// those older than its minute.
const maxWarned = 1024

// warnOnce logs msg at warn level at most once a minute per key; a
// condition that persists is checked on every step.
func (e *Engine) warnOnce(key, msg string, args ...interface{}) {
	e.warnMu.Lock()
	defer e.warnMu.Unlock()
	now := e.cfg.Clock.Now()
	if last, ok := e.warned[key]; ok && now.Sub(last) < time.Minute {
		return
	}
	if len(e.warned) > maxWarned {
		// Keys name tasks too; forget those that went quiet.
		for k, last := range e.warned {
			if now.Sub(last) >= time.Minute {
				delete(e.warned, k)
			}
		}
	}
	e.warned[key] = now
	e.log.Warn(msg, args...)
}

func sameManager(cur, want *pb.Node) bool {
	return cur != nil && cur.GetRole() == want.GetRole() &&
		cur.GetAddress() == want.GetAddress() &&
		cur.GetRpcPort() == want.GetRpcPort() &&
		cur.GetHttpPort() == want.GetHttpPort() &&
		cur.GetRaftPort() == want.GetRaftPort() &&
		cur.GetGossipPort() == want.GetGossipPort() &&
		cur.GetStatus() == want.GetStatus()
}

// noteRestore gives workers WorkerGrace again when the cluster meta's
// identity (its cluster ID, its restore epoch) changed since the last
// step: a snapshot restore replaced every node record with a saved one
// that this leader's gossip has not confirmed. After a disaster recovery
// the workers are only now joining the new managers' pool, and a record
// never seen in gossip would count from its registration, long ago.
func (e *Engine) noteRestore(meta *pb.ClusterMeta, now time.Time) {
	if meta.GetClusterId() == "" {
		return // not initialised yet: nothing to compare
	}
	id := fmt.Sprintf("%s/%d", meta.GetClusterId(), meta.GetRestoreEpoch())
	if old := e.identity.Swap(&id); old != nil && *old != id {
		e.enabledAt.Store(now.UnixNano())
		e.log.Info("cluster state restored; workers get their grace again",
			"grace", e.cfg.WorkerGrace)
	}
}

// gossipPort is the port of a gossip member's "ip:port" address, 0 when
// there is none.
func gossipPort(addr string) int32 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0
	}
	return int32(port)
}

// checkWorkers marks down a ready or draining worker whose gossip member
// has been dead for longer than WorkerGrace, and ready again a down worker
// that is alive. Nobody is marked down before the engine has been enabled
// for WorkerGrace, or within WorkerGrace of a restore: a new leader's
// gossip view may still be settling, and so may a restored state's. A
// draining worker that dies goes down too, so that its tasks leave the
// endpoint sets and are replaced and collected like any lost task.
// TODO: it comes back ready, its drain forgotten; a drain flag apart from
// the status (as Nomad's eligibility) would keep it.
func (e *Engine) checkWorkers(ctx context.Context, snap *fsm.Snapshot, now time.Time) error {
	e.noteRestore(snap.Meta(), now)
	grace := e.cfg.WorkerGrace
	enabledAt := time.Unix(0, e.enabledAt.Load())
	members := make(map[string]bool) // name -> alive
	deadSince := make(map[string]time.Time)
	for _, m := range e.cfg.Liveness.Members() {
		members[m.Meta.Name] = m.Alive
		deadSince[m.Meta.Name] = m.Since
	}

	var errs []error
	for _, n := range snap.Nodes() {
		if n.GetRole() != pb.RoleWorker {
			continue
		}
		alive, seen := members[n.GetName()]
		status := ""
		switch {
		case n.GetStatus() == pb.NodeDown && seen && alive:
			status = pb.NodeReady
		case (n.GetStatus() == pb.NodeReady || n.GetStatus() == pb.NodeDraining) && !alive:
			since, ok := deadSince[n.GetName()]
			if !ok {
				// Never seen in gossip: count from its registration.
				since = time.Unix(0, n.GetRegisteredAt())
			}
			if now.Sub(since) > grace && now.Sub(enabledAt) > grace {
				status = pb.NodeDown
			}
		}
		if status == "" {
			continue
		}
		cmd := &pb.NodeStatusCmd{Name: n.GetName(), Status: status, At: now.UnixNano()}
		if _, err := e.propose(ctx, fsm.NodeStatusType, cmd); err != nil {
			errs = append(errs, fmt.Errorf("worker %q: %w", n.GetName(), err))
			continue
		}
		e.log.Info("worker status changed", "node", n.GetName(), "status", status)
	}
	return errors.Join(errs...)
}
