package deploy

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
)

// countingProposer counts the commands handed to it before passing them
// on, as the Raft node would see them.
type countingProposer struct {
	next Proposer
	n    atomic.Uint64
}

func (p *countingProposer) Propose(ctx context.Context, t fsm.CommandType, msg proto.Message) (uint64, error) {
	p.n.Add(1)
	return p.next.Propose(ctx, t, msg)
}

// countedEngine replaces h's engine with one whose proposals are counted.
func countedEngine(h *harness) *countingProposer {
	cp := &countingProposer{next: h.prop}
	h.eng = h.newEngine()
	h.eng.cfg.Proposer = cp
	return cp
}

func TestStatsCount(t *testing.T) {
	tests := []struct {
		name string
		lose func(int, fsm.CommandType) (bool, bool)
	}{
		{name: "every proposal committed"},
		{name: "every third proposal lost", lose: func(n int, _ fsm.CommandType) (bool, bool) {
			return n%3 == 0, false
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 3)
			cp := countedEngine(h)
			if got := h.eng.Stats(); got != (Stats{}) {
				t.Fatalf("new engine: %+v, want zero", got)
			}
			h.steady(webSpec("v1", 3))
			h.prop.lose = tt.lose
			h.deploy(webSpec("v2", 3))

			steps := int(h.eng.Stats().Steps)
			h.run(time.Second, 20, func() { steps++ }, h.deploymentStatus("web", "successful"))

			got := h.eng.Stats()
			if got.Steps != uint64(steps) {
				t.Errorf("steps = %d, want %d", got.Steps, steps)
			}
			if got.Proposals == 0 || got.Proposals != cp.n.Load() {
				t.Errorf("proposals = %d, want %d (non-zero)", got.Proposals, cp.n.Load())
			}
			if got.Enabled {
				t.Errorf("enabled after Step alone, want false")
			}
		})
	}
}

func TestStatsStandStillWhileDisabled(t *testing.T) {
	h := newHarness(t, 2)
	countedEngine(h)
	h.eng.cfg.Interval = 5 * time.Millisecond

	h.eng.SetEnabled(true)
	if !h.eng.Stats().Enabled {
		t.Fatal("not enabled after SetEnabled(true)")
	}
	h.deploy(webSpec("v1", 2))
	waitFor(t, h.store(), func() error {
		st := h.eng.Stats()
		if st.Steps < 3 || st.Proposals == 0 {
			return fmt.Errorf("enabled engine made %d steps and %d proposals", st.Steps, st.Proposals)
		}
		return nil
	})

	h.eng.SetEnabled(false)
	off := h.eng.Stats()
	if off.Enabled {
		t.Fatal("enabled after SetEnabled(false)")
	}
	// A change the loop would act on: the tasks report running.
	h.work()
	if got := h.eng.Stats(); got != off {
		t.Errorf("disabled engine moved: %+v, then %+v", off, got)
	}

	// A new term counts on from where the last one stopped.
	h.eng.SetEnabled(true)
	waitFor(t, h.store(), func() error {
		if st := h.eng.Stats(); st.Steps <= off.Steps || !st.Enabled {
			return fmt.Errorf("re-enabled engine: %+v, was %+v", st, off)
		}
		return nil
	})
	h.eng.SetEnabled(false)
}
