package agent

import (
	"context"
	"errors"
	"io"
	"time"

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
func (a *Agent) watch(ctx context.Context, out chan<- assignment) {
	bo := backoff{min: 50 * time.Millisecond, max: time.Second}
	opened := func() {} // the first stream follows the initial join
	for {
		addr := a.mgrs.order()[0]
		err := a.watchAt(ctx, addr, out, &bo, opened)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("assignment stream lost", "manager", addr, "error", err)
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
			restores: resp.GetRestores(), index: resp.GetIndex()}}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
