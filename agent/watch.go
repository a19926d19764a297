package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// errStreamEnded means a manager closed the assignment stream.
var errStreamEnded = errors.New("assignment stream ended")

// watch follows this node's assignments, moving to the next manager
// whenever a stream breaks, and hands every list to the runner. While no
// manager answers the runner keeps the last list, so every container
// keeps running.
//
// The first list of every stream after the first one asks for a gossip
// rejoin: if the managers restarted, their new pools do not know us.
//
// A manager whose state does not know this node refuses the stream
// (NotFound): a new cluster started after every manager was lost, before
// the backup is restored into it, or a replica that has not applied the
// registration yet. The worker keeps what it runs and retries, as for any
// other refusal, until a manager knows it. It also asks for a gossip
// rejoin at the first refusal of a run, then every unknownRejoinEvery
// while the run lasts: the new cluster's managers answer on the old ones'
// addresses under their names, so this worker's pool may never have seen
// them go, and their pools do not know the worker. Once a restore makes
// it a node of theirs, their leader must see it alive in gossip, or it
// calls the worker down and replaces its tasks.
func (a *Agent) watch(ctx context.Context, out chan<- assignment) {
	bo := backoff{min: 50 * time.Millisecond, max: time.Second}
	opened := func() {} // the first stream follows the initial join
	unknown := refusals{started: time.Now()}
	for {
		addr := a.mgrs.order()[0]
		err := a.watchAt(ctx, addr, out, &bo, func() {
			unknown.served()
			opened()
		})
		if ctx.Err() != nil {
			return
		}
		if unknown.log(a, "assignment stream lost", addr, err) &&
			unknown.rejoinDue(time.Now()) {
			a.requestRejoin()
		}
		a.mgrs.failed(addr)
		opened = a.requestRejoin
		if !sleepCtx(ctx, bo.next()) {
			return
		}
	}
}

// watchAt reads one manager's stream until it breaks, calling opened
// on its first list.
func (a *Agent) watchAt(ctx context.Context, addr string,
	out chan<- assignment, bo *backoff, opened func()) error {
	c, err := a.mgrs.client(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := c.Assignments(ctx, &pb.AssignmentsRequest{
		Node: a.cfg.Name,
	})
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errStreamEnded
			}
			return err
		}
		if first {
			opened()
		}
		bo.reset()
		a.mgrs.succeeded(addr)
		select {
		case out <- assignment{tasks: resp.GetTasks(), pos: position{
			epoch: resp.GetRestoreEpoch(), index: resp.GetIndex()}}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// unknownRejoinEvery is how often a worker that managers keep refusing
// as unknown joins their gossip pool again.
const unknownRejoinEvery = 10 * time.Second

// registerSettle is how long after a watcher starts, before any manager
// has served it, a refusal as unknown is expected: the worker has just
// registered through the leader, and the manager it streams from may not
// have applied the registration yet.
const registerSettle = 5 * time.Second

// refusals follows a watcher's streams refused because the manager does
// not know this node. A run of refusals starts after a list or another
// error (the managers may have restarted since). It keeps the log
// readable: the first refusal of a run is a warning, the ones that follow
// while the worker retries are debug lines.
type refusals struct {
	started  time.Time // when the watcher started
	ever     bool      // a manager has served a list
	quiet    bool
	rejoined time.Time // the last gossip rejoin of the run, zero if none
}

// served notes that a manager served a list.
func (r *refusals) served() { r.ever, r.quiet, r.rejoined = true, false, time.Time{} }

// log logs why a stream to the manager at addr ended, with kv, and
// reports whether the manager refused this node as unknown.
func (r *refusals) log(a *Agent, msg, addr string, err error, kv ...any) bool {
	kv = append([]any{"manager", addr, "error", err}, kv...)
	if status.Code(err) != codes.NotFound {
		r.quiet, r.rejoined = false, time.Time{}
		a.log.Warn(msg, kv...)
		return false
	}
	if r.quiet || (!r.ever && time.Since(r.started) < registerSettle) {
		a.log.Debug(msg, kv...)
		return true
	}
	r.quiet = true
	a.log.Warn(msg+": the manager does not know this node; keeping "+
		"every container and the last endpoint set until one does", kv...)
	return true
}

// rejoinDue reports whether a gossip rejoin is due at now, and if so
// notes it as asked for.
func (r *refusals) rejoinDue(now time.Time) bool {
	if !r.rejoined.IsZero() && now.Sub(r.rejoined) < unknownRejoinEvery {
		return false
	}
	r.rejoined = now
	return true
}
