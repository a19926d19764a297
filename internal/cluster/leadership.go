package cluster

import (
	"errors"
	"fmt"
	"sort"
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

// Errors of EngineStill.
var (
	// ErrEngineMoved: within one term, an engine ran where it should
	// not have, or the leader's stopped.
	ErrEngineMoved = errors.New("engine moved")
	// ErrNewTerm: leadership changed hands between the two views (an
	// election), so they say nothing about stray engines.
	ErrNewTerm = errors.New("new term")
)

// EngineStill compares two `raft peers` views taken through leader. It
// is an error wrapping ErrNewTerm when leader no longer leads in now or
// a manager is at a later term than leader was in before, and one
// wrapping ErrEngineMoved when, in the same term, leader's engine is off
// or another manager's engine is on or its steps or proposals differ
// from before. Managers that did not answer in now are left out.
func EngineStill(leader string, before, now map[string]Peer) error {
	b, n := before[leader], now[leader]
	if n.State != "leader" || n.Term != b.Term {
		return fmt.Errorf("%w: %s was leader at term %d, now %s at term %d",
			ErrNewTerm, leader, b.Term, n.State, n.Term)
	}
	for name, p := range now {
		if p.Term > b.Term {
			return fmt.Errorf("%w: %s is %s at term %d, after term %d of %s",
				ErrNewTerm, name, p.State, p.Term, b.Term, leader)
		}
	}
	if !n.EngineEnabled {
		return fmt.Errorf("%w: leader %s's engine is off in its term %d",
			ErrEngineMoved, leader, n.Term)
	}

	var moved []string
	for name, bp := range before {
		np, ok := now[name]
		if name == leader || !ok || np.State == "unreachable" {
			continue
		}
		if np.EngineEnabled || np.EngineSteps != bp.EngineSteps ||
			np.EngineProposals != bp.EngineProposals {
			moved = append(moved, fmt.Sprintf(
				"%s (%s): engine_enabled=%t steps %d -> %d, proposals %d -> %d",
				name, np.State, np.EngineEnabled, bp.EngineSteps, np.EngineSteps,
				bp.EngineProposals, np.EngineProposals))
		}
	}
	if len(moved) > 0 {
		sort.Strings(moved)
		return fmt.Errorf("%w on followers of %s in term %d: %s", ErrEngineMoved,
			leader, b.Term, strings.Join(moved, "; "))
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
