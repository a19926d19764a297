package scheduler

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Host ports handed to tasks come from [PortMin, PortMax).
const (
	PortMin = 20000
	PortMax = 32000
)

// ErrNoNodes is returned by Place when no node can take a task: no ready
// worker exists, or none has enough free host ports.
var ErrNoNodes = errors.New("no feasible node")

// Placement is where one new task goes: a node, its address and a host
// port for every named port of the spec.
type Placement struct {
	Node    string
	Address string
	Ports   map[string]int32
}

// candidate is a feasible node and what the ranking needs to know of it.
type candidate struct {
	node     *pb.Node
	appTasks int
	tasks    int
	used     map[int32]bool
}

// Place chooses nodes and host ports for n new tasks of app with spec.
//
// nodes is every known node; live is every task of the cluster (of all
// apps) that may still hold resources. A task counts toward spread when its
// desired state is run, and holds its host ports until its state is stopped
// or failed, whatever its desired state.
//
// Feasible nodes are ready workers. Each placement goes to the feasible
// node with the fewest live tasks of the app, then the fewest live tasks,
// then the lowest name; earlier placements of the same call count. Each
// named port gets the lowest free host port in [PortMin, PortMax) on that
// node that no live task there uses and that is no ingress port.
//
// Place returns nil for n <= 0, and an error wrapping ErrNoNodes when a
// placement finds no feasible node; it then returns no placement at all.
// It refuses up front, without allocating for them, more tasks than the
// feasible nodes have host ports for, so a huge n costs nothing.
func Place(nodes []*pb.Node, live []*pb.Task, spec *pb.AppSpec, app string,
	n int) ([]Placement, error) {
	if n <= 0 {
		return nil, nil
	}
	ingress := ingressPorts(live, spec)
	cands := candidates(nodes, live, app)

	// Memory grows with what is placed, never with what is asked for.
	room := capacity(cands, ingress, len(spec.GetPorts()))
	if n > room {
		return nil, fmt.Errorf("app %q: placing %d tasks, room for %d: %w",
			app, n, room, ErrNoNodes)
	}
	out := make([]Placement, 0, min(n, maxPrealloc))
	for i := 0; i < n; i++ {
		c, ports := pick(cands, spec, ingress)
		if c == nil {
			return nil, fmt.Errorf("app %q: placing task %d of %d: %w", app, i+1, n, ErrNoNodes)
		}
		for _, p := range ports {
			c.used[p] = true
		}
		c.appTasks++
		c.tasks++
		out = append(out, Placement{
			Node:    c.node.Name,
			Address: c.node.Address,
			Ports:   portMap(spec, ports),
		})
	}
	return out, nil
}

// maxPrealloc bounds the slice Place allocates before placing anything.
const maxPrealloc = 1024

// capacity returns how many tasks needing k host ports each the
// candidates can take at most: unbounded (math.MaxInt) when k is 0.
func capacity(cands []*candidate, ingress map[int32]bool, k int) int {
	if len(cands) == 0 {
		return 0
	}
	if k == 0 {
		return math.MaxInt
	}
	total := 0
	for _, c := range cands {
		free := 0
		for p := int32(PortMin); p < PortMax; p++ {
			if !c.used[p] && !ingress[p] {
				free++
			}
		}
		total += free / k
	}
	return total
}

// candidates returns the feasible nodes with their current load.
func candidates(nodes []*pb.Node, live []*pb.Task, app string) []*candidate {
	byName := make(map[string]*candidate)
	var cands []*candidate
	for _, n := range nodes {
		if n.GetRole() != pb.RoleWorker || n.GetStatus() != pb.NodeReady {
			continue
		}
		c := &candidate{node: n, used: make(map[int32]bool)}
		byName[n.GetName()] = c
		cands = append(cands, c)
	}

	for _, t := range live {
		c := byName[t.GetNode()]
		if c == nil {
			continue
		}
		if holdsPorts(t) {
			for _, p := range t.GetPorts() {
				c.used[p] = true
			}
		}
		if t.GetDesired() != pb.DesiredRun {
			continue
		}
		c.tasks++
		if t.GetApp() == app {
			c.appTasks++
		}
	}
	return cands
}

// pick returns the best candidate that has enough free ports, and the
// ports it would use, or nil.
func pick(cands []*candidate, spec *pb.AppSpec, ingress map[int32]bool) (*candidate, []int32) {
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.appTasks != b.appTasks {
			return a.appTasks < b.appTasks
		}
		if a.tasks != b.tasks {
			return a.tasks < b.tasks
		}
		return a.node.GetName() < b.node.GetName()
	})
	for _, c := range cands {
		if ports, ok := freePorts(c.used, ingress, len(spec.GetPorts())); ok {
			return c, ports
		}
	}
	return nil, nil
}

// freePorts returns the k lowest host ports that are neither used nor
// ingress ports.
func freePorts(used, ingress map[int32]bool, k int) ([]int32, bool) {
	ports := make([]int32, 0, k)
	for p := int32(PortMin); p < PortMax && len(ports) < k; p++ {
		if !used[p] && !ingress[p] {
			ports = append(ports, p)
		}
	}
	return ports, len(ports) == k
}

// portMap names the chosen ports after the spec's ports, in order.
func portMap(spec *pb.AppSpec, ports []int32) map[string]int32 {
	if len(ports) == 0 {
		return nil
	}
	m := make(map[string]int32, len(ports))
	for i, p := range spec.GetPorts() {
		m[p.GetName()] = ports[i]
	}
	return m
}

// ingressPorts collects the ingress ports of spec and of every live task:
// they are published on every worker, so no task may take one.
func ingressPorts(live []*pb.Task, spec *pb.AppSpec) map[int32]bool {
	m := make(map[int32]bool)
	add := func(s *pb.AppSpec) {
		for _, p := range s.GetPorts() {
			if p.GetIngress() != 0 {
				m[p.GetIngress()] = true
			}
		}
	}
	add(spec)
	for _, t := range live {
		add(t.GetSpec())
	}
	return m
}

// holdsPorts reports whether a task may still have its host ports bound.
func holdsPorts(t *pb.Task) bool {
	s := t.GetState()
	return s != pb.TaskStopped && s != pb.TaskFailed
}
