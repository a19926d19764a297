package agent

import (
	"net"
	"sort"
	"strconv"

	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// comebacks tells when a manager the pool saw dead is alive again: a
// partition between this worker and the managers healed, or the
// manager restarted. Only rejoinManagers uses it.
type comebacks struct {
	// dead holds the managers, by name, last seen dead or gone from the
	// pool after they died (memberlist forgets dead members after a
	// while; they still count as coming back when they reappear).
	dead map[string]bool
}

// update takes the pool's members and returns the managers that are
// alive now but were dead at the previous call, sorted by name.
func (c *comebacks) update(ms []gossip.Member) []gossip.Member {
	next := make(map[string]bool)
	seen := make(map[string]bool)
	var back []gossip.Member
	for _, m := range ms {
		if m.Meta.Role != pb.RoleManager {
			continue
		}
		name := m.Meta.Name
		seen[name] = true
		switch {
		case !m.Alive:
			next[name] = true
		case c.dead[name]:
			back = append(back, m)
		}
	}
	for name := range c.dead {
		if !seen[name] {
			next[name] = true
		}
	}
	c.dead = next
	sort.Slice(back, func(i, j int) bool {
		return back[i].Meta.Name < back[j].Meta.Name
	})
	return back
}

// managersBack deals with managers the pool sees alive again after it
// saw them dead. Two things of the time they were out of reach outlive
// it. Their pools still hold this worker dead: memberlist tells a node
// it was declared dead only at its next push-pull, up to 30s away, and
// a leader keeps the worker down until then. So the pool joins them at
// once, which tells the worker, which refutes. And a connection to them
// may be a black hole left by a partition, on which an assignment
// stream waits for TCP's retransmission backoff (up to minutes) before
// the worker hears what changed while it was away, such as tasks
// stopped because they run elsewhere now; so those connections are
// closed, and the streams move to fresh ones.
func (a *Agent) managersBack(p pool, back []gossip.Member, addrs []string) {
	names := make([]string, 0, len(back))
	for _, m := range back {
		names = append(names, m.Meta.Name)
		if m.Meta.Address != "" && m.Meta.RPCPort > 0 {
			a.mgrs.reset(net.JoinHostPort(m.Meta.Address,
				strconv.Itoa(m.Meta.RPCPort)))
		}
	}
	a.log.Info("managers alive in gossip again; rejoining and reconnecting",
		"managers", names)
	a.join(p, addrs)
}

// redial closes the connections to addrs, managers whose calls timed
// out while another answered: a partition may have left them black
// holes (see managersBack), and a stream waiting on one would not hear
// what changed meanwhile.
func (a *Agent) redial(addrs []string) {
	for _, addr := range addrs {
		a.mgrs.reset(addr)
	}
}

// reset closes the connection to addr, if there is one, ending every
// call and stream on it; the next client call dials afresh.
func (m *managers) reset(addr string) {
	m.mu.Lock()
	c, ok := m.conns[addr]
	delete(m.conns, addr)
	m.mu.Unlock()
	if ok {
		_ = c.Close() // nothing to do about a failed close
	}
}
