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
// task is desired stop or leaves the assignment list: the runtime call
// blocked in it sees its context end, whatever the start made is torn
// down, and the task is reported as a stop reports it, never running.
func TestStartCancelled(t *testing.T) {
	tests := []struct {
		name     string
		stage    string // the runtime call that blocks
		onCancel string // what a blocked Start does when cancelled
		unassign bool   // removed from the list rather than desired stop
	}{
		{name: "pull, desired stop", stage: "pull"},
		{name: "start leaves a container, desired stop",
			stage: "start", onCancel: "leave"},
		{name: "start starts anyway, desired stop",
			stage: "start", onCancel: "start"},
		{name: "pull, unassigned", stage: "pull", unassign: true},
		{name: "start leaves a container, unassigned",
			stage: "start", onCancel: "leave", unassign: true},
		{name: "start starts anyway, unassigned",
			stage: "start", onCancel: "start", unassign: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFakeRuntime()
			rt.blockStarts(tt.stage, tt.onCancel)
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

			if tt.unassign {
				h.mgr.assign()
			} else {
				stop := task("t1")
				stop.State = pb.TaskPending
				stop.Desired = pb.DesiredStop
				h.mgr.assign(stop)
				testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskStopped, false))
			}

			want := "start t1"
			if tt.stage == "pull" {
				want = "pull registry.test/web:v3"
			}
			testutil.WaitFor(t, wait, func() error {
				if !slices.Contains(rt.cancelledCalls(), want) {
					return fmt.Errorf("%q not cancelled; cancelled %v",
						want, rt.cancelledCalls())
				}
				if ids := rt.containerIDs(); len(ids) > 0 {
					return fmt.Errorf("containers left: %v; calls %v",
						ids, rt.callList())
				}
				if now, _ := rt.concurrency(); now != 0 {
					return fmt.Errorf("%d runtime calls in flight", now)
				}
				return nil
			})
			if tt.stage == "pull" && rt.called("start t1") {
				t.Errorf("started after a cancelled pull; calls %v",
					rt.callList())
			}
			if tt.onCancel != "" && !rt.called("stop t1") &&
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
// that removing every task while most wait leaves no container, reports
// none running, and lets the waiting ones go without a runtime call.
func TestStartsBounded(t *testing.T) {
	const n = 40
	rt := newFakeRuntime()
	rt.blockStarts("start", "leave")
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
		if now, _ := rt.concurrency(); now < maxStarts {
			return fmt.Errorf("%d starts in the runtime, want %d",
				now, maxStarts)
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

	// The app is removed while most of its tasks wait for a slot.
	h.mgr.assign()
	testutil.WaitFor(t, wait, func() error {
		if ids := rt.containerIDs(); len(ids) > 0 {
			return fmt.Errorf("containers left: %v", ids)
		}
		if now, _ := rt.concurrency(); now != 0 {
			return fmt.Errorf("%d runtime calls in flight", now)
		}
		if c := rt.cancelledCalls(); len(c) < maxStarts {
			return fmt.Errorf("cancelled %v, want the %d blocked starts",
				c, maxStarts)
		}
		return nil
	})
	if _, peak := rt.concurrency(); peak > maxStarts {
		t.Errorf("%d starts in the runtime at once, want at most %d",
			peak, maxStarts)
	}
	// A slot freed by a cancelled start may be taken by a waiting task
	// that the same list cancels a moment later; most never get one.
	if got := countPrefix(rt.callList(), "pull "); got > n/2 {
		t.Errorf("%d of %d tasks reached the runtime; calls %v",
			got, n, rt.callList())
	}
	for _, tk := range tasks {
		if states := h.mgr.states(tk.GetId()); slices.Contains(states, pb.TaskRunning) {
			t.Errorf("task %s reported %v", tk.GetId(), states)
		}
	}

	// The slots are free again: a new task starts.
	rt.unblock()
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
