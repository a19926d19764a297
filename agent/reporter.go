package agent

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// flushEvery is the shortest time between two batches of changed reports.
const flushEvery = 100 * time.Millisecond

// reporter sends task reports to the managers: the changed ones in
// batches, and all of them every interval. The runner updates it without
// ever blocking on the network. Every request also carries the index of
// the endpoint set the worker serves; a new one is sent promptly even
// when no task changed, since the leader waits for it before it lets a
// draining task stop.
type reporter struct {
	node     string
	mgrs     *managers
	interval time.Duration
	log      hclog.Logger

	mu      sync.Mutex
	current map[string]*pb.TaskReport // the latest report of every task
	dirty   map[string]bool           // not yet sent since it changed
	served  uint64                    // endpoints index served, 0 if none
	sendIdx bool                      // served not yet sent since it changed
	kick    chan struct{}

	// timeout bounds each request to one manager (rpcTimeout).
	timeout time.Duration

	// recovered, if set, is called from run when a request goes through
	// after one or more failed: the managers are reachable again, after
	// a partition say, and their gossip pools may hold this worker dead
	// without its knowing (see Agent.requestRejoin). The full report
	// every interval makes sure a partition longer than that fails a
	// request.
	recovered func()

	// hung, if set, is called from run when a request goes through, with
	// the managers whose requests timed out since the last one that did,
	// other than the one that took it: their connections may be black
	// holes left by a partition, on which every call and stream waits
	// for TCP's retransmission backoff (see managers.reset).
	hung func(addrs []string)
	// timedOut collects those managers; only run uses it.
	timedOut map[string]bool
}

func newReporter(node string, mgrs *managers, interval time.Duration,
	log hclog.Logger) *reporter {
	return &reporter{
		node:     node,
		mgrs:     mgrs,
		interval: interval,
		log:      log.Named("reporter"),
		current:  make(map[string]*pb.TaskReport),
		dirty:    make(map[string]bool),
		kick:     make(chan struct{}, 1),
		timeout:  rpcTimeout,
		timedOut: make(map[string]bool),
	}
}

// update records rep as the task's latest report and schedules it.
func (r *reporter) update(rep *pb.TaskReport) {
	r.mu.Lock()
	r.current[rep.GetTaskId()] = proto.Clone(rep).(*pb.TaskReport)
	r.dirty[rep.GetTaskId()] = true
	r.mu.Unlock()

	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// setServed records the index of the endpoint set now served and
// schedules it.
func (r *reporter) setServed(index uint64) {
	r.mu.Lock()
	changed := index != r.served
	r.served = index
	r.sendIdx = r.sendIdx || changed
	r.mu.Unlock()

	if changed {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// forget drops a task that is no longer assigned.
func (r *reporter) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.current, id)
	delete(r.dirty, id)
}

// take returns the dirty reports, or all of them, and the endpoints
// index if it is to be sent (always with all), and marks them clean.
func (r *reporter) take(all bool) ([]*pb.TaskReport, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()

	var out []*pb.TaskReport
	for id, rep := range r.current {
		if all || r.dirty[id] {
			out = append(out, rep)
		}
	}
	clear(r.dirty)
	sort.Slice(out, func(i, j int) bool {
		return out[i].GetTaskId() < out[j].GetTaskId()
	})
	var index uint64
	if all || r.sendIdx {
		index = r.served
	}
	r.sendIdx = false
	return out, index
}

// requeue marks reports that could not be sent dirty again, unless the
// task was forgotten meanwhile, and the endpoints index if it was in the
// request.
func (r *reporter) requeue(reps []*pb.TaskReport, index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index != 0 {
		r.sendIdx = true
	}
	for _, rep := range reps {
		if _, ok := r.current[rep.GetTaskId()]; ok {
			r.dirty[rep.GetTaskId()] = true
		}
	}
}

// run sends reports until ctx is done.
func (r *reporter) run(ctx context.Context) {
	full := time.NewTicker(r.interval)
	defer full.Stop()
	bo := backoff{min: 100 * time.Millisecond, max: time.Second}
	var retry <-chan time.Time
	var last time.Time
	failing := false // the last request failed

	for {
		all := false
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-retry:
			retry = nil
		case <-full.C:
			all = true
		}

		// Changes that come close together go out in one batch.
		if !sleepCtx(ctx, time.Until(last.Add(flushEvery))) {
			return
		}
		batch, index := r.take(all)
		if len(batch) == 0 && index == 0 {
			continue
		}
		last = time.Now()
		took, err := r.send(ctx, batch, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("report failed, will retry", "reports", len(batch),
				"error", err)
			r.requeue(batch, index)
			retry = time.After(bo.next())
			failing = true
			continue
		}
		bo.reset()
		r.through(took, failing)
		failing = false
	}
}

// through hands the managers that timed out to hung, and tells
// recovered, after a request went through manager took, after failed
// ones if failing.
func (r *reporter) through(took string, failing bool) {
	delete(r.timedOut, took)
	if len(r.timedOut) > 0 && r.hung != nil {
		addrs := sortedKeys(r.timedOut)
		r.log.Info("managers timed out while another took the reports; "+
			"redialing them", "managers", addrs, "took", took)
		r.hung(addrs)
	}
	clear(r.timedOut)
	if failing && r.recovered != nil {
		r.log.Info("reports go through again", "manager", took)
		r.recovered()
	}
}

// send tries each manager in turn until one accepts the batch, and
// returns that manager. It notes in timedOut those that did not answer
// in time.
func (r *reporter) send(ctx context.Context, batch []*pb.TaskReport,
	index uint64) (string, error) {
	req := &pb.ReportRequest{Node: r.node, Reports: batch,
		EndpointsIndex: index}
	var err error
	for _, addr := range r.mgrs.order() {
		if err = r.sendTo(ctx, addr, req); err == nil {
			return addr, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if status.Code(err) == codes.DeadlineExceeded {
			r.timedOut[addr] = true
		}
		r.log.Debug("report refused", "manager", addr, "error", err)
	}
	return "", fmt.Errorf("report to every manager: %w", err)
}

func (r *reporter) sendTo(ctx context.Context, addr string,
	req *pb.ReportRequest) error {
	c, err := r.mgrs.client(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err = c.Report(ctx, req)
	return err
}
