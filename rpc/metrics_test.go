package rpc

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestMetrics(t *testing.T) {
	tests := []struct {
		name   string
		leader bool
		engine deploy.Stats
		want   []string
	}{
		{
			name:   "leader",
			leader: true,
			engine: deploy.Stats{Enabled: true, Steps: 12, Proposals: 5},
			want: []string{
				"hivemind_engine_enabled 1",
				"hivemind_engine_steps_total 12",
				"hivemind_engine_proposals_total 5",
				"hivemind_raft_leader 1",
				"hivemind_raft_term 7",
				"hivemind_raft_applied_index 40",
			},
		},
		{
			name:   "follower that led before",
			engine: deploy.Stats{Steps: 3, Proposals: 1},
			want: []string{
				"hivemind_engine_enabled 0",
				"hivemind_engine_steps_total 3",
				"hivemind_engine_proposals_total 1",
				"hivemind_raft_leader 0",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startManager(t, "m1", tt.leader, func(c *Config) {
				c.Engine = func() deploy.Stats { return tt.engine }
			})
			m.raft.set(func(r *fakeRaft) {
				r.stats = &pb.ManagerStatus{Name: "m1", State: "follower", Term: 7, AppliedIndex: 40}
				if tt.leader {
					r.stats.State = "leader"
				}
			})

			req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet,
				"http://"+m.srv.HTTPAddr()+"/metrics", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET /metrics: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
			}
			lines := map[string]bool{}
			for _, l := range strings.Split(string(body), "\n") {
				lines[l] = true
			}
			for _, w := range tt.want {
				if !lines[w] {
					t.Errorf("no line %q in /metrics:\n%s", w, body)
				}
			}
			if !strings.Contains(string(body), "go_goroutines ") {
				t.Errorf("no Go runtime metrics in /metrics")
			}
		})
	}
}
