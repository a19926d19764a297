package agent

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/internal/testutil"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// TestDrainAbandonedWhenDesiredRunAgain checks that a task told to stop,
// and so draining, that is desired run again before its drain ends (a
// snapshot restore during a rollout) is brought back: the drain is
// abandoned, its container is not stopped, it is reported running again,
// and a later stop drains afresh instead of stopping at once.
func TestDrainAbandonedWhenDesiredRunAgain(t *testing.T) {
	tests := []struct {
		name    string
		adopted bool // the container ran before the agent started
	}{
		{name: "started here"},
		{name: "adopted at restart", adopted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFakeRuntime()
			if tt.adopted {
				rt.add("t1", true, 0)
			}
			h := startAgent(t, "secret", rt)

			// A drain far longer than the test: only abandoning it
			// brings the task back in time.
			tk := task("t1")
			tk.Spec.Update = &pb.UpdateSpec{
				DrainTimeout: int64(time.Hour),
				StopTimeout:  int64(time.Second),
			}
			if !tt.adopted {
				h.mgr.assign(tk)
				testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
			}

			// The rollout stops it: out of rotation, it drains.
			stop := proto.Clone(tk).(*pb.Task)
			stop.State, stop.Healthy = pb.TaskRunning, true
			stop.Desired = pb.DesiredStop
			stop.OutOfRotation = true
			h.mgr.assign(stop)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskDraining, false))

			// The restore brings back the task desired run.
			run := proto.Clone(tk).(*pb.Task)
			run.State, run.Healthy = pb.TaskRunning, true
			h.mgr.assign(run)
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskRunning, true))
			if rt.called("stop t1") || rt.called("remove t1") || !rt.has("t1") {
				t.Fatalf("container of t1 stopped or removed; calls %v",
					rt.callList())
			}
			states := h.mgr.states("t1")
			if i := slices.Index(states, pb.TaskDraining); i < 0 ||
				states[len(states)-1] != pb.TaskRunning {
				t.Errorf("states reported %v: want draining, then running",
					states)
			}

			// Stopped again, still in rotation: it drains again and
			// keeps running, the abandoned drain counting for nothing.
			again := proto.Clone(stop).(*pb.Task)
			again.OutOfRotation = false
			h.mgr.assign(again, task("t2"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t2", pb.TaskRunning, true))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskDraining, false))
			if rt.called("stop t1") || !rt.has("t1") {
				t.Fatalf("t1 stopped while in rotation after its drain "+
					"was abandoned; calls %v", rt.callList())
			}

			// Out of rotation once more, with a short drain: it drains
			// and stops as usual.
			short := proto.Clone(again).(*pb.Task)
			short.OutOfRotation = true
			short.Spec.Update.DrainTimeout = int64(10 * time.Millisecond)
			h.mgr.assign(short, task("t2"))
			testutil.WaitFor(t, wait, h.mgr.hasReport("t1", pb.TaskStopped, false))
			testutil.WaitFor(t, wait, func() error {
				if rt.has("t1") {
					return fmt.Errorf("t1 not torn down; calls %v",
						rt.callList())
				}
				return nil
			})
		})
	}
}
