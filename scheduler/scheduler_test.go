package scheduler

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func worker(name, status string) *pb.Node {
	return &pb.Node{Name: name, Role: pb.RoleWorker, Status: status, Address: "10.0.0." + name[len(name)-1:]}
}

func task(app, node string, ports ...int32) *pb.Task {
	t := &pb.Task{App: app, Node: node, Desired: pb.DesiredRun, State: pb.TaskRunning, Ports: map[string]int32{}}
	for i, p := range ports {
		t.Ports[fmt.Sprintf("p%d", i)] = p
	}
	return t
}

func spec(ports ...string) *pb.AppSpec {
	s := &pb.AppSpec{Name: "web"}
	for _, p := range ports {
		s.Ports = append(s.Ports, &pb.Port{Name: p})
	}
	return s
}

func TestPlace(t *testing.T) {
	stopped := task("web", "w1", 20000)
	stopped.Desired, stopped.State = pb.DesiredStop, pb.TaskStopped
	draining := task("web", "w1", 20001)
	draining.Desired = pb.DesiredStop
	ingressSpec := spec("http")
	ingressSpec.Ports[0].Ingress = 20000

	tests := []struct {
		name    string
		nodes   []*pb.Node
		live    []*pb.Task
		spec    *pb.AppSpec
		n       int
		want    []string // node names in order
		ports   []int32  // port "http" of each placement, if checked
		wantErr error
	}{
		{name: "zero", nodes: []*pb.Node{worker("w1", pb.NodeReady)}, spec: spec(), n: 0},
		{name: "no nodes", spec: spec(), n: 1, wantErr: ErrNoNodes},
		{
			name:    "only infeasible",
			nodes:   []*pb.Node{worker("w1", pb.NodeDown), worker("w2", pb.NodeDraining), {Name: "m1", Role: pb.RoleManager, Status: pb.NodeReady}},
			spec:    spec(),
			n:       1,
			wantErr: ErrNoNodes,
		},
		{
			name:  "spread by name",
			nodes: []*pb.Node{worker("w2", pb.NodeReady), worker("w1", pb.NodeReady)},
			spec:  spec("http"),
			n:     3,
			want:  []string{"w1", "w2", "w1"},
			ports: []int32{20000, 20000, 20001},
		},
		{
			name:  "fewest of the app first",
			nodes: []*pb.Node{worker("w1", pb.NodeReady), worker("w2", pb.NodeReady)},
			live:  []*pb.Task{task("web", "w1"), task("db", "w2"), task("db", "w2")},
			spec:  spec(),
			n:     2,
			want:  []string{"w2", "w1"},
		},
		{
			name:  "then fewest tasks",
			nodes: []*pb.Node{worker("w1", pb.NodeReady), worker("w2", pb.NodeReady)},
			live:  []*pb.Task{task("db", "w1")},
			spec:  spec(),
			n:     1,
			want:  []string{"w2"},
		},
		{
			name:  "skips down node",
			nodes: []*pb.Node{worker("w1", pb.NodeDown), worker("w2", pb.NodeReady)},
			spec:  spec(),
			n:     2,
			want:  []string{"w2", "w2"},
		},
		{
			name:  "ports of draining tasks are busy, of stopped ones free",
			nodes: []*pb.Node{worker("w1", pb.NodeReady)},
			live:  []*pb.Task{stopped, draining},
			spec:  spec("http"),
			n:     2,
			want:  []string{"w1", "w1"},
			ports: []int32{20000, 20002},
		},
		{
			name:  "ingress port never taken",
			nodes: []*pb.Node{worker("w1", pb.NodeReady)},
			spec:  ingressSpec,
			n:     1,
			want:  []string{"w1"},
			ports: []int32{20001},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.nodes, tc.live, tc.spec, "web", tc.n)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d placements, want %d", len(got), len(tc.want))
			}
			for i, p := range got {
				if p.Node != tc.want[i] {
					t.Errorf("placement %d on %q, want %q", i, p.Node, tc.want[i])
				}
				if tc.ports != nil && p.Ports["http"] != tc.ports[i] {
					t.Errorf("placement %d port %d, want %d", i, p.Ports["http"], tc.ports[i])
				}
			}
		})
	}
}

func TestPlaceNoFreePorts(t *testing.T) {
	var live []*pb.Task
	for p := int32(PortMin); p < PortMax; p++ {
		live = append(live, task("db", "w1", p))
	}
	nodes := []*pb.Node{worker("w1", pb.NodeReady), worker("w2", pb.NodeReady)}
	got, err := Place(nodes, live, spec("http"), "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		if p.Node != "w2" {
			t.Errorf("placed on full node %q", p.Node)
		}
	}
}

// TestPlaceProperties places into random clusters and checks that no task
// lands on an infeasible node, no host port is used twice on a node, and
// equal nodes end up with app counts that differ by at most one.
func TestPlaceProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	statuses := []string{pb.NodeReady, pb.NodeReady, pb.NodeDown, pb.NodeDraining}
	for iter := 0; iter < 300; iter++ {
		var nodes []*pb.Node
		ready := map[string]bool{}
		for i := 0; i < 1+rng.Intn(6); i++ {
			n := worker(fmt.Sprintf("w%d", i), statuses[rng.Intn(len(statuses))])
			nodes = append(nodes, n)
			ready[n.Name] = n.Status == pb.NodeReady
		}
		equal := iter%2 == 0 // no pre-existing tasks: all nodes equal
		var live []*pb.Task
		if !equal {
			for i := 0; i < rng.Intn(10); i++ {
				n := nodes[rng.Intn(len(nodes))]
				live = append(live, task([]string{"web", "db"}[rng.Intn(2)], n.Name, int32(PortMin+rng.Intn(8))))
			}
		}
		s := spec("a", "b")
		n := rng.Intn(12)
		got, err := Place(nodes, live, s, "web", n)
		if errors.Is(err, ErrNoNodes) {
			for name, ok := range ready {
				if ok {
					t.Fatalf("iter %d: ErrNoNodes with ready node %s", iter, name)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}

		used := map[string]map[int32]bool{}
		for _, tk := range live {
			for _, p := range tk.Ports {
				if used[tk.Node] == nil {
					used[tk.Node] = map[int32]bool{}
				}
				used[tk.Node][p] = true
			}
		}
		count := map[string]int{}
		for _, p := range got {
			if !ready[p.Node] {
				t.Fatalf("iter %d: placed on non-ready node %s", iter, p.Node)
			}
			count[p.Node]++
			if used[p.Node] == nil {
				used[p.Node] = map[int32]bool{}
			}
			for _, port := range p.Ports {
				if used[p.Node][port] {
					t.Fatalf("iter %d: port %d used twice on %s", iter, port, p.Node)
				}
				used[p.Node][port] = true
			}
		}
		if equal {
			lo, hi := n, 0
			for name, ok := range ready {
				if ok {
					lo, hi = min(lo, count[name]), max(hi, count[name])
				}
			}
			if hi-lo > 1 {
				t.Fatalf("iter %d: spread %d..%d over equal nodes", iter, lo, hi)
			}
		}
	}
}

// TestPlaceHugeCount checks that asking for far more tasks than the nodes
// can hold fails fast without allocating for them: a manager once died of
// OOM placing 2147483647 replicas.
func TestPlaceHugeCount(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*pb.Node
		spec  *pb.AppSpec
		n     int
	}{
		{"no nodes", nil, spec(), math.MaxInt32},
		{"ports run out", []*pb.Node{worker("w1", pb.NodeReady)}, spec("http"), 1 << 24},
		{"max int32 with ports", []*pb.Node{worker("w1", pb.NodeReady), worker("w2", pb.NodeReady)},
			spec("http", "admin"), math.MaxInt32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := Place(tt.nodes, nil, tt.spec, "web", tt.n)
			runtime.ReadMemStats(&after)

			if !errors.Is(err, ErrNoNodes) || got != nil {
				t.Fatalf("Place(%d) = %d placements, %v; want none and ErrNoNodes", tt.n, len(got), err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Fatalf("Place(%d) allocated %d MiB, want under 16", tt.n, alloc>>20)
			}
		})
	}
}
