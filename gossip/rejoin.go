package gossip

import (
	"context"
	"net"
	"slices"
	"sort"
	"sync"
	"time"
)

// Rejoin keeps this pool joined to the members of role it knows of, in
// the background, until ctx is cancelled or the pool shuts down. It
// returns at once. Every Config.RejoinInterval it joins again, each in
// parallel, the gossip address of:
//
//   - every member of role (other than this node) it has seen and that
//     is not alive now, dead or left, unless an alive member holds that
//     address now (Members keeps a dead member's last address);
//   - every seed ("ip", "host", "ip:port", as for Join) that no alive
//     member holds. A seed naming a host rather than an IP cannot be
//     matched to a member without a DNS lookup, so it is joined only in
//     a round that joins something else anyway, or while no other
//     member of role is alive.
//
// RetryJoin is not enough for a node that is cut off from the others
// for longer than memberlist keeps gossiping to the dead (30s): both
// sides then hold each other dead, memberlist neither probes nor
// push-pulls a dead node, and then forgets it, so the pools never merge
// again when the partition heals. A Join from either side merges them:
// it exchanges full state, the node told it was declared dead refutes,
// and both see each other alive again.
//
// Rejoin logs at Info when the set of members it is rejoining changes
// (so once per episode, not once per round) and when all are alive
// again; failed joins, expected while a member is down, are logged at
// Debug. A member gone for good stays in Members, so it is joined every
// round for the life of the process: a refused connection is cheap, an
// unanswered one holds the round (and Shutdown) for memberlist's TCP
// timeout (10s), as RetryJoin's joins do.
func (p *Pool) Rejoin(ctx context.Context, role string, seeds []string) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.rejoin(ctx, role, seeds)
	}()
}

func (p *Pool) rejoin(ctx context.Context, role string, seeds []string) {
	t := time.NewTicker(p.cfg.RejoinInterval)
	defer t.Stop()

	var announced []string // the targets of the last log line
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.shutdownCh:
			return
		case <-t.C:
		}

		targets := rejoinTargets(p.Members(), role, p.cfg.Name, seeds)
		labels := make([]string, len(targets))
		for i, tg := range targets {
			labels[i] = tg.label
		}
		switch {
		case slices.Equal(labels, announced):
		case len(labels) == 0:
			p.log.Info("known members alive in gossip again", "role", role)
		default:
			p.log.Info("known members not alive in gossip, joining them again",
				"role", role, "members", labels,
				"every", p.cfg.RejoinInterval)
		}
		announced = labels

		var wg sync.WaitGroup
		for _, tg := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.Join([]string{tg.addr}); err != nil {
					p.log.Debug("rejoin failed", "member", tg.label,
						"error", err)
				}
			}()
		}
		wg.Wait()
	}
}

// rejoinTarget is an address Rejoin joins: addr is "ip:port", label
// names it in logs (the member's name, or the seed).
type rejoinTarget struct {
	label, addr string
}

// rejoinTargets returns what a Rejoin round of node self joins, given
// the pool's members ms (see Rejoin), sorted by label, one per address.
func rejoinTargets(ms []Member, role, self string, seeds []string) []rejoinTarget {
	aliveAt := make(map[string]bool) // addresses of alive members
	othersAlive := false             // an alive member of role but self
	for _, m := range ms {
		if !m.Alive {
			continue
		}
		if m.Addr != "" {
			aliveAt[canonical(m.Addr)] = true
		}
		if m.Meta.Role == role && m.Meta.Name != self {
			othersAlive = true
		}
	}

	var out []rejoinTarget
	have := make(map[string]bool)
	add := func(label, addr string) {
		if !have[addr] {
			have[addr] = true
			out = append(out, rejoinTarget{label: label, addr: addr})
		}
	}
	for _, m := range ms {
		if m.Alive || m.Meta.Role != role || m.Meta.Name == self || m.Addr == "" {
			continue
		}
		if a := canonical(m.Addr); !aliveAt[a] {
			add(m.Meta.Name, a)
		}
	}
	var hosts []string // seeds naming a host
	for _, s := range seeds {
		a := canonical(withPort(s, DefaultPort))
		host, _, err := net.SplitHostPort(a)
		switch {
		case err != nil || aliveAt[a]:
		case net.ParseIP(host) == nil:
			hosts = append(hosts, a)
		default:
			add(a, a)
		}
	}
	if len(out) > 0 || !othersAlive {
		for _, a := range hosts {
			add(a, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].label < out[j].label })
	return out
}

// canonical writes an "ip:port" address the way memberlist does, so that
// a seed and a member's Addr compare equal; anything else is returned
// as is.
func canonical(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, port)
}
