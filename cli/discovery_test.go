package cli

import (
	"reflect"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/gossip"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

type fakeMembers []gossip.Member

func (f fakeMembers) Members() []gossip.Member { return f }
func (f fakeMembers) Changed() <-chan struct{} { return nil }

func TestDiscoveryManagers(t *testing.T) {
	members := fakeMembers{
		{Alive: true, Meta: gossip.Meta{Role: "manager", Name: "m1", Address: "127.0.0.1", RaftPort: 7072, RPCPort: 7071}},
		{Alive: false, Meta: gossip.Meta{Role: "manager", Name: "m2", Address: "127.0.0.2", RaftPort: 7072}},
		{Alive: true, Meta: gossip.Meta{Role: "worker", Name: "w1", Address: "127.0.0.3"}},
		{Alive: true, Meta: gossip.Meta{Role: "manager", Name: "m3", Address: "::1", RaftPort: 8000}},
		{Alive: true, Meta: gossip.Meta{Name: "nometa"}},
	}
	d := &gossipDiscovery{pool: members}
	want := []raftnode.Peer{
		{Name: "m1", RaftAddr: "127.0.0.1:7072"},
		{Name: "m3", RaftAddr: "[::1]:8000"},
	}
	if got := d.Managers(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Managers() = %v, want %v", got, want)
	}
}

func TestDiscoveryManagerRPCAddr(t *testing.T) {
	d := &gossipDiscovery{pool: fakeMembers{
		{Alive: true, Meta: gossip.Meta{Role: "manager", Name: "m1", Address: "127.0.0.1", RPCPort: 7071}},
		{Alive: false, Meta: gossip.Meta{Role: "manager", Name: "m2", Address: "127.0.0.2", RPCPort: 7071}},
		{Alive: true, Meta: gossip.Meta{Role: "manager", Name: "m3", Address: "127.0.0.3"}},
		{Alive: true, Meta: gossip.Meta{Role: "worker", Name: "w1", Address: "127.0.0.4", RPCPort: 7071}},
	}}
	tests := []struct {
		name, want string
		ok         bool
	}{
		{name: "m1", want: "127.0.0.1:7071", ok: true},
		{name: "m2"}, // dead
		{name: "m3"}, // no gRPC port published
		{name: "w1"}, // not a manager
		{name: "m9"}, // unknown
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := d.ManagerRPCAddr(tt.name)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("ManagerRPCAddr(%q) = %q, %v; want %q, %v",
					tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestHasRaftState(t *testing.T) {
	tests := []struct {
		name string
		st   *pb.ManagerStatus
		want bool
	}{
		{"fresh node", &pb.ManagerStatus{State: "follower", LastContact: -1}, false},
		{"log entries", &pb.ManagerStatus{State: "follower", LastIndex: 1, LastContact: -1}, true},
		{"applied entries", &pb.ManagerStatus{State: "follower", AppliedIndex: 3, LastContact: -1}, true},
		{"had an election", &pb.ManagerStatus{State: "candidate", Term: 2, LastContact: -1}, true},
		{"leader", &pb.ManagerStatus{State: "leader"}, true},
		{"heard from a leader", &pb.ManagerStatus{State: "follower", LastContact: 1000}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasRaftState(tt.st); got != tt.want {
				t.Fatalf("hasRaftState(%v) = %v, want %v", tt.st, got, tt.want)
			}
		})
	}
}

func TestDiscoveryDeadManagers(t *testing.T) {
	since := time.Unix(1_700_000_000, 0)
	d := &gossipDiscovery{pool: fakeMembers{
		{Alive: true, Meta: gossip.Meta{Role: "manager", Name: "m1", Address: "127.0.0.1", RaftPort: 7072}},
		{Alive: false, Since: since, Meta: gossip.Meta{Role: "manager", Name: "m2", Address: "127.0.0.2", RaftPort: 7072}},
		{Alive: false, Since: since, Meta: gossip.Meta{Role: "worker", Name: "w1", Address: "127.0.0.3"}},
		{Alive: false, Since: since.Add(time.Minute), Meta: gossip.Meta{Role: "manager", Name: "m3"}},
	}}
	want := []raftnode.DeadPeer{
		{Name: "m2", Since: since},
		{Name: "m3", Since: since.Add(time.Minute)},
	}
	if got := d.DeadManagers(); !reflect.DeepEqual(got, want) {
		t.Fatalf("DeadManagers() = %v, want %v", got, want)
	}
}
