package deploy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// A restore replaces every node record with a saved one. After a disaster
// recovery the leader's gossip has not seen the restored workers yet:
// they are only now joining the new managers' pool. Like a new leader, a
// restored state gives them WorkerGrace before anyone is marked down.
func TestRestoreGivesWorkersGrace(t *testing.T) {
	tests := []struct {
		name    string
		restore func(meta *pb.ClusterMeta)
	}{
		{name: "another cluster's backup", restore: func(m *pb.ClusterMeta) {
			m.ClusterId, m.RestoreEpoch = "old-cluster", 1
		}},
		{name: "a backup of this cluster", restore: func(m *pb.ClusterMeta) {
			m.RestoreEpoch++
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 3)
			h.steady(webSpec("v1", 3))
			h.clock.Advance(10 * time.Second) // the engine has long been enabled

			// The restored w1 is nowhere in this leader's gossip yet.
			h.live.set(gossip.Meta{Role: pb.RoleWorker, Name: "w1"}, false,
				h.clock.Now().Add(-time.Minute))
			meta := proto.Clone(h.store().Meta()).(*pb.ClusterMeta)
			tc.restore(meta)
			h.apply(fsm.SetMetaType, &pb.SetMetaCmd{Meta: meta})
			restoredAt := h.clock.Now()

			for h.clock.Now().Sub(restoredAt) <= 5*time.Second {
				h.step()
				if s := h.store().Node("w1").GetStatus(); s != pb.NodeReady {
					t.Fatalf("w1 is %s %s after the restore, within the 5s grace",
						s, h.clock.Now().Sub(restoredAt))
				}
				h.clock.Advance(time.Second)
			}
			h.step()
			if s := h.store().Node("w1").GetStatus(); s != pb.NodeDown {
				t.Errorf("w1, still not in gossip past the grace, is %s, want down", s)
			}
		})
	}
}
