package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Peer is one entry of `hivemind raft peers -o json`: a manager's own
// view of Raft and of its rollout engine, as it reported it.
type Peer struct {
	Name            string `json:"name"`
	Address         string `json:"address"`
	State           string `json:"state"`
	Voter           bool   `json:"voter"`
	Leader          bool   `json:"leader"`
	Term            Num    `json:"term"`
	AppliedIndex    Num    `json:"applied_index"`
	LastIndex       Num    `json:"last_index"`
	EngineEnabled   bool   `json:"engine_enabled"`
	EngineSteps     Num    `json:"engine_steps"`
	EngineProposals Num    `json:"engine_proposals"`
}

// Peers is `raft peers` through manager, by name.
func (c *Cluster) Peers(manager string) (map[string]Peer, error) {
	var list []Peer
	if err := c.JSONAt(manager, &list, "raft", "peers"); err != nil {
		return nil, err
	}
	out := make(map[string]Peer, len(list))
	for _, p := range list {
		out[p.Name] = p
	}
	return out, nil
}

// EngineOnlyOn is an error naming what is not yet true unless `raft
// peers` through leader shows leader leading with its rollout engine
// on, and every other manager that answers a follower with its engine
// off. Managers that are not running are left out.
func (c *Cluster) EngineOnlyOn(leader string) error {
	peers, err := c.Peers(leader)
	if err != nil {
		return err
	}
	var wrong []string
	for _, m := range c.Managers() {
		if !c.Running(m.Name) {
			continue
		}
		p, ok := peers[m.Name]
		switch {
		case !ok:
			wrong = append(wrong, m.Name+" not in raft peers")
		case m.Name == leader && (p.State != "leader" || !p.EngineEnabled):
			wrong = append(wrong, fmt.Sprintf("%s is %s with engine_enabled=%t",
				m.Name, p.State, p.EngineEnabled))
		case m.Name != leader && (p.State != "follower" || p.EngineEnabled):
			wrong = append(wrong, fmt.Sprintf("%s is %s with engine_enabled=%t",
				m.Name, p.State, p.EngineEnabled))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("want only %s leading with its engine on: %s",
			leader, strings.Join(wrong, "; "))
	}
	return nil
}

// MoveLeadership hands leadership to the manager to with `raft
// transfer-leadership` (asked again while another leads) and waits until
// EngineOnlyOn(to) holds: to leads with its engine on, every other
// running manager follows with its engine off.
func (c *Cluster) MoveLeadership(to string, timeout time.Duration) error {
	if _, err := c.Member(to); err != nil {
		return err
	}
	t0 := time.Now()
	err := WaitFor(timeout, func() error {
		leader, err := c.Leader()
		if err != nil {
			return err
		}
		if leader != to {
			out, err := c.CLI("raft", "transfer-leadership", to)
			if err != nil {
				return fmt.Errorf("%s leads; transfer to %s: %w", leader, to, err)
			}
			return fmt.Errorf("%s led; asked to transfer to %s: %s",
				leader, to, strings.TrimSpace(string(out)))
		}
		return c.EngineOnlyOn(to)
	})
	if err != nil {
		return fmt.Errorf("move leadership to %s: %w", to, err)
	}
	c.logf("leadership moved to %s in %s", to, since(t0))
	return nil
}

// ErrEngineMoved is wrapped by EngineStill's error: a manager's engine
// ran where it should not have.
var ErrEngineMoved = errors.New("engine moved")

// EngineStill is an error wrapping ErrEngineMoved unless every manager
// in before other than leader has, in now, its engine off and the same
// engine steps and proposals as in before.
func EngineStill(leader string, before, now map[string]Peer) error {
	var moved []string
	for name, b := range before {
		if name == leader {
			continue
		}
		n, ok := now[name]
		switch {
		case !ok:
			moved = append(moved, name+" no longer listed")
		case n.EngineEnabled || n.EngineSteps != b.EngineSteps ||
			n.EngineProposals != b.EngineProposals:
			moved = append(moved, fmt.Sprintf(
				"%s (%s): engine_enabled=%t steps %d -> %d, proposals %d -> %d",
				name, n.State, n.EngineEnabled, b.EngineSteps, n.EngineSteps,
				b.EngineProposals, n.EngineProposals))
		}
	}
	if len(moved) > 0 {
		return fmt.Errorf("%w on followers of %s: %s", ErrEngineMoved, leader,
			strings.Join(moved, "; "))
	}
	return nil
}

// Metrics scrapes GET /metrics of a manager's HTTP API and returns the
// samples without labels, by metric name.
func (c *Cluster) Metrics(manager string) (map[string]float64, error) {
	m, err := c.Member(manager)
	if err != nil {
		return nil, err
	}
	body, err := Get(m.IP+":7070", "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(l, "#") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s /metrics: line %q: %w", manager, l, err)
		}
		out[name] = v
	}
	return out, nil
}
