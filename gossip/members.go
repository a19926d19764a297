package gossip

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Member is one node as seen from this process.
type Member struct {
	// Meta is the node's last published Meta; Meta.Name is always the
	// node's gossip name. A node that published no valid Meta gets a
	// Meta holding only its Name.
	Meta Meta
	// Addr is the node's gossip address, "ip:port", as last seen; a
	// node seen dead keeps it, so that it can be joined again.
	Addr string
	// Alive is false once the node is declared dead or has left.
	Alive bool
	// Since is the local time the node entered its current Alive state.
	Since time.Time
}

// members records every member ever seen. It implements
// memberlist.EventDelegate; memberlist calls it with its own node lock
// held, so it must never call back into memberlist.
type members struct {
	log hclog.Logger
	now func() time.Time

	mu      sync.Mutex
	byName  map[string]*Member
	changed chan struct{}
}

func newMembers(log hclog.Logger) *members {
	return &members{
		log:     log,
		now:     time.Now,
		byName:  make(map[string]*Member),
		changed: make(chan struct{}),
	}
}

// NotifyJoin implements memberlist.EventDelegate.
func (m *members) NotifyJoin(n *memberlist.Node) { m.record(n, true) }

// NotifyLeave implements memberlist.EventDelegate; memberlist calls it
// both for a node that left and for one declared dead.
func (m *members) NotifyLeave(n *memberlist.Node) { m.record(n, false) }

// NotifyUpdate implements memberlist.EventDelegate (a Meta change).
func (m *members) NotifyUpdate(n *memberlist.Node) { m.record(n, true) }

func (m *members) record(n *memberlist.Node, alive bool) {
	meta := m.decode(n)

	m.mu.Lock()
	defer m.mu.Unlock()

	cur, ok := m.byName[n.Name]
	switch {
	case !ok:
		cur = &Member{Meta: meta, Alive: alive, Since: m.now()}
		m.byName[n.Name] = cur
	case cur.Alive != alive:
		cur.Alive, cur.Since = alive, m.now()
	}
	if len(n.Meta) > 0 {
		cur.Meta = meta
	}
	cur.Addr = n.Address()
	m.log.Info("member changed", "member", n.Name, "alive", alive,
		"addr", n.Address())

	close(m.changed)
	m.changed = make(chan struct{})
}

// decode parses n's Meta, falling back to a Meta holding only the name.
func (m *members) decode(n *memberlist.Node) Meta {
	var meta Meta
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &meta); err != nil {
			m.log.Warn("bad node meta", "member", n.Name, "error", err)
			meta = Meta{}
		}
	}
	if meta.Name != "" && meta.Name != n.Name {
		m.log.Warn("node meta names another node", "member", n.Name,
			"meta_name", meta.Name)
	}
	// The memberlist name is the identity; Meta.Name always matches it.
	meta.Name = n.Name
	return meta
}

// list returns a copy of every member, sorted by name.
func (m *members) list() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()

	out := make([]Member, 0, len(m.byName))
	for _, mem := range m.byName {
		out = append(out, *mem)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Meta.Name < out[j].Meta.Name
	})
	return out
}

func (m *members) watch() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}
