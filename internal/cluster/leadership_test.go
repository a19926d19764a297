package cluster

import (
	"errors"
	"testing"
)

func TestEngineStill(t *testing.T) {
	view := func(edit func(map[string]Peer)) map[string]Peer {
		v := map[string]Peer{
			"m1": {Name: "m1", State: "leader", Term: 4, EngineEnabled: true, EngineSteps: 50, EngineProposals: 9},
			"m2": {Name: "m2", State: "follower", Term: 4, EngineSteps: 20, EngineProposals: 3},
			"m3": {Name: "m3", State: "follower", Term: 4, EngineSteps: 7, EngineProposals: 1},
		}
		if edit != nil {
			edit(v)
		}
		return v
	}
	set := func(name string, f func(*Peer)) func(map[string]Peer) {
		return func(v map[string]Peer) {
			p := v[name]
			f(&p)
			v[name] = p
		}
	}
	tests := []struct {
		name string
		now  map[string]Peer
		want error // nil, ErrNewTerm or ErrEngineMoved
	}{
		{"leader steps on", view(set("m1", func(p *Peer) { p.EngineSteps = 70; p.EngineProposals = 10 })), nil},
		{"follower unreachable", view(set("m3", func(p *Peer) { *p = Peer{Name: "m3", State: "unreachable"} })), nil},
		{"follower steps", view(set("m2", func(p *Peer) { p.EngineSteps = 21 })), ErrEngineMoved},
		{"follower proposes", view(set("m3", func(p *Peer) { p.EngineProposals = 2 })), ErrEngineMoved},
		{"follower engine on", view(set("m2", func(p *Peer) { p.EngineEnabled = true })), ErrEngineMoved},
		{"leader engine off", view(set("m1", func(p *Peer) { p.EngineEnabled = false })), ErrEngineMoved},
		{"leader stepped down", view(set("m1", func(p *Peer) { p.State = "follower"; p.Term = 5 })), ErrNewTerm},
		{"election under way", view(set("m2", func(p *Peer) {
			p.State, p.Term, p.EngineSteps = "candidate", 5, 25
		})), ErrNewTerm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := EngineStill("m1", view(nil), tt.now)
			switch {
			case tt.want == nil && err != nil:
				t.Errorf("EngineStill: %v, want nil", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("EngineStill: %v, want %v", err, tt.want)
			}
		})
	}
}
