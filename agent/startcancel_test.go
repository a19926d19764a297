package agent

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// TestStartCancelled checks that a start in flight is cancelled when its
// task is desired stop or leaves the assignment list, but that the
// runtime call running in it (a Pull or a Start) never sees its context
// end: containerd leaks what a cancelled call was making. The call is
// let finish; then nothing more is started, whatever the start made is
// torn down, and the task is reported as a stop reports it, never
// running or failed.
func TestStartCancelled(t *testing.T) {
	tests := []struct {
		name      string
		stage     string // the runtime call that blocks
		onRelease string // what the blocked Start does once released
		unassign  bool   // removed from the list rather than desired stop
	}{
		{name: "pull, desired stop", stage: "pull"},
		{name: "start, desired stop", stage: "start"},
		{name: "start fails leaving a container, desired stop",
			stage: "start", onRelease: "fail"},
		{name: "pull, unassigned", stage: "pull", unassign: true},
		{name: "start, unassigned", stage: "start", unassign: true},
		{name: "start fails leaving a container, unassigned",
			stage: "start", onRelease: "fail", unassign: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFakeRuntime()
			rt.blockStarts(tt.stage, tt.onRelease)
			h := startAgent(t, "secret", rt)
			t.Cleanup(rt.unblock)

			h.mgr.assign(task("t1"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskPending, false))
			testutil.WaitFor(t, wait, func() error {
				if now, _ := rt.concurrency(); now != 1 {
					return fmt.Errorf("%d runtime calls in flight, want "+
						"the blocked %s; calls %v", now, tt.stage,
						rt.callList())
				}
				return nil
			})

			// The list that cancels t1's start also holds a task that
			// is desired stop and was never started: its report
			// (stopped at once) shows that the runner applied the list.
			barrier := task("t0")
			barrier.Desired = pb.DesiredStop
			if tt.unassign {
				h.mgr.assign(barrier)
			} else {
				stop := task("t1")
				stop.State = pb.TaskPending
				stop.Desired = pb.DesiredStop
				h.mgr.assign(barrier, stop)
			}
			testutil.WaitFor(t, wait, h.mgr.hasReport("t0", pb.TaskStopped, false))

			// The blocked call goes on as if nothing happened.
			rt.unblock()
			testutil.WaitFor(t, wait, func() error {
				if now, _ := rt.concurrency(); now != 0 {
					return fmt.Errorf("%d runtime calls in flight", now)
				}
				if ids := rt.containerIDs(); len(ids) > 0 {
					return fmt.Errorf("containers left: %v; calls %v",
						ids, rt.callList())
				}
				if !tt.unassign {
					return h.mgr.hasReport("t1", pb.TaskStopped, false)()
				}
				return nil
			})
			if c := rt.cancelledCalls(); len(c) > 0 {
				t.Errorf("runtime calls saw their context cancelled: %v", c)
			}
			if tt.stage == "pull" && rt.called("start t1") {
				t.Errorf("started after the start was cancelled during "+
					"its pull; calls %v", rt.callList())
			}
			if tt.stage == "start" && !rt.called("stop t1") &&
				!rt.called("remove t1") {
				t.Errorf("what the start made was not torn down; "+
					"calls %v", rt.callList())
			}
			if states := h.mgr.states("t1"); slices.Contains(states, pb.TaskRunning) ||
				slices.Contains(states, pb.TaskFailed) {
				t.Errorf("states reported %v: want no running or failed",
					states)
			}
		})
	}
}

// TestStartsBounded checks that no more than maxStarts starts reach the
// runtime at once, that the tasks waiting for a slot are pending, and
// that stopping every task while most wait ends the waiting ones at once
// without a runtime call, lets the starts in the runtime finish with
// their contexts live, then tears their containers down and reports no
// task running.
func TestStartsBounded(t *testing.T) {
	const n = 40
	rt := newFakeRuntime()
	rt.blockStarts("start", "")
	h := startAgent(t, "secret", rt)
	t.Cleanup(rt.unblock)

	var tasks []*pb.Task
	for i := range n {
		tasks = append(tasks, task(fmt.Sprintf("t%02d", i)))
	}
	h.mgr.assign(tasks...)
	testutil.WaitFor(t, wait, func() error {
		for _, tk := range tasks {
			if err := h.mgr.hasReport(tk.GetId(), pb.TaskPending, false)(); err != nil {
				return err
			}
		}
		if got := countPrefix(rt.callList(), "start "); got < maxStarts {
			return fmt.Errorf("%d starts in the runtime, want %d",
				got, maxStarts)
		}
		return nil
	})
	if now, peak := rt.concurrency(); now != maxStarts || peak > maxStarts {
		t.Fatalf("%d starts in the runtime, at most %d at once; want %d",
			now, peak, maxStarts)
	}
	if got := countPrefix(rt.callList(), "pull "); got != maxStarts {
		t.Errorf("%d pulls while %d slots are taken; calls %v",
			got, maxStarts, rt.callList())
	}

	// Every task is desired stop while most wait for a slot: the
	// waiting ones are stopped at once, while the starts in the runtime
	// still hold every slot.
	inRuntime := map[string]bool{}
	var stops []*pb.Task
	for _, tk := range tasks {
		inRuntime[tk.GetId()] = rt.called("start " + tk.GetId())
		stop := task(tk.GetId())
		stop.State = pb.TaskPending
		stop.Desired = pb.DesiredStop
		stops = append(stops, stop)
	}
	h.mgr.assign(stops...)
	testutil.WaitFor(t, wait, func() error {
		for _, tk := range tasks {
			if inRuntime[tk.GetId()] {
				continue
			}
			if err := h.mgr.hasReport(tk.GetId(), pb.TaskStopped, false)(); err != nil {
				return err
			}
		}
		return nil
	})
	if got := countPrefix(rt.callList(), "pull "); got != maxStarts {
		t.Errorf("%d of %d tasks reached the runtime, want the %d "+
			"in it before the stop; calls %v", got, n, maxStarts,
			rt.callList())
	}

	// The starts in the runtime finish; what they made is torn down.
	rt.unblock()
	testutil.WaitFor(t, wait, func() error {
		if now, _ := rt.concurrency(); now != 0 {
			return fmt.Errorf("%d runtime calls in flight", now)
		}
		if ids := rt.containerIDs(); len(ids) > 0 {
			return fmt.Errorf("containers left: %v", ids)
		}
		for _, tk := range tasks {
			if err := h.mgr.hasReport(tk.GetId(), pb.TaskStopped, false)(); err != nil {
				return err
			}
		}
		return nil
	})
	if c := rt.cancelledCalls(); len(c) > 0 {
		t.Errorf("runtime calls saw their context cancelled: %v", c)
	}
	if _, peak := rt.concurrency(); peak > maxStarts {
		t.Errorf("%d starts in the runtime at once, want at most %d",
			peak, maxStarts)
	}
	if got := countPrefix(rt.callList(), "pull "); got != maxStarts {
		t.Errorf("%d of %d tasks reached the runtime; calls %v",
			got, n, rt.callList())
	}
	for _, tk := range tasks {
		if states := h.mgr.states(tk.GetId()); slices.Contains(states, pb.TaskRunning) ||
			slices.Contains(states, pb.TaskFailed) {
			t.Errorf("task %s reported %v", tk.GetId(), states)
		}
	}

	// The slots are free again: a new task starts.
	h.mgr.assign(task("late"))
	testutil.WaitFor(t, wait, h.mgr.hasReport("late", pb.TaskRunning, true))
}

// countPrefix counts the calls that begin with prefix.
func countPrefix(calls []string, prefix string) int {
	n := 0
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}
