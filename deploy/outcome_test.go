package deploy

import (
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/fsm"
)

// A deployment's finish is logged once: as finished when its proposal
// succeeds, or as an unknown outcome when the proposal fails though its
// entry may commit (here every plan is applied and its reply lost).
func TestDeploymentFinishLoggedOnce(t *testing.T) {
	tests := []struct {
		name                    string
		lose                    func(int, fsm.CommandType) (bool, bool)
		wantFinished, wantMaybe int
	}{
		{name: "proposal succeeds", wantFinished: 1},
		{name: "reply lost", lose: func(_ int, ct fsm.CommandType) (bool, bool) {
			return false, ct == fsm.PlanType
		}, wantMaybe: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 3)
			h.steady(webSpec("v1", 3))
			h.prop.lose = tt.lose
			d := h.deploy(webSpec("v2", 3)).GetDeployment()
			h.run(time.Second, 20, nil, h.deploymentStatus("web", "successful"))
			h.step() // a step after the finish proposes nothing more

			id := "deployment=" + d.GetId()
			finished := h.logs.lines("deployment finished", id)
			maybe := h.logs.lines("deployment finish proposed, outcome unknown", id)
			if len(finished) != tt.wantFinished || len(maybe) != tt.wantMaybe {
				t.Errorf("logged finished %d times, unknown %d times; want %d and %d:\n%v\n%v",
					len(finished), len(maybe), tt.wantFinished, tt.wantMaybe, finished, maybe)
			}
		})
	}
}

func TestClusterMetaOutcomeUnknown(t *testing.T) {
	h := newHarness(t, 1)
	h.prop.lose = func(_ int, ct fsm.CommandType) (bool, bool) {
		return false, ct == fsm.SetMetaType
	}
	h.step()
	h.step()
	if got := h.logs.lines("cluster meta proposed, outcome unknown"); len(got) != 1 {
		t.Errorf("unknown outcome logged %d times, want once: %v", len(got), got)
	}
	if got := h.logs.lines("cluster meta created"); len(got) != 0 {
		t.Errorf("meta logged as created though its reply was lost: %v", got)
	}
	if h.store().Meta().GetWorkerToken() == "" {
		t.Errorf("meta not applied")
	}
}
