package gossip

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// startRejoinPool starts a manager pool named name on 127.0.0.1:port (0
// for a free port) that rejoins every 100ms.
func startRejoinPool(t *testing.T, name string, port int) *Pool {
	t.Helper()
	p, err := New(Config{
		Name:           name,
		BindAddr:       "127.0.0.1",
		Port:           port,
		Meta:           Meta{Role: "manager", Address: "127.0.0.1"},
		Logger:         testutil.Logger(t, hclog.Debug).Named(name),
		RejoinInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("start pool %q: %v", name, err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// TestRejoinDeadMember: a member declared dead comes back on its address
// in a pool of its own that joins no one (as a manager cut off longer
// than memberlist gossips to the dead: neither side contacts the other
// again). Only a's Rejoin brings the two pools together again: memberlist
// neither probes nor push-pulls a node it holds dead.
func TestRejoinDeadMember(t *testing.T) {
	a := startRejoinPool(t, "a", 0)
	b := startRejoinPool(t, "b", 0)
	port := b.Port()
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("b joins a: %v", err)
	}
	both := map[string]bool{"a": true, "b": true}
	testutil.WaitFor(t, 5*time.Second, func() error { return sees(a, both) })
	a.Rejoin(t.Context(), "manager", nil)

	if err := b.Shutdown(); err != nil {
		t.Fatalf("shutdown b: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		return sees(a, map[string]bool{"a": true, "b": false})
	})

	// b again, on its address, with no seeds and no Rejoin of its own.
	back := time.Now()
	b2 := startRejoinPool(t, "b", port)
	testutil.WaitFor(t, 10*time.Second, func() error { return sees(a, both) })
	testutil.WaitFor(t, 10*time.Second, func() error { return sees(b2, both) })
	t.Logf("a and b alive to each other %s after b came back", time.Since(back))
}

// TestRejoinSeed: a node whose pool knows no one joins its seeds again
// by Rejoin alone (RetryJoin is not used).
func TestRejoinSeed(t *testing.T) {
	a := startRejoinPool(t, "a", 0)
	b := startRejoinPool(t, "b", 0)
	b.Rejoin(t.Context(), "manager", []string{a.Addr()})
	both := map[string]bool{"a": true, "b": true}
	testutil.WaitFor(t, 10*time.Second, func() error { return sees(a, both) })
	testutil.WaitFor(t, 10*time.Second, func() error { return sees(b, both) })
}

func TestRejoinTargets(t *testing.T) {
	mgr := func(name, addr string, alive bool) Member {
		return Member{Meta: Meta{Role: "manager", Name: name}, Addr: addr, Alive: alive}
	}
	self := mgr("m1", "10.0.0.1:7073", true)
	tests := []struct {
		name  string
		ms    []Member
		seeds []string
		want  []rejoinTarget
	}{{
		name: "all alive",
		ms:   []Member{self, mgr("m2", "10.0.0.2:7073", true)},
		seeds: []string{"10.0.0.1", "10.0.0.2:7073", "m2.example",
			"[::ffff:10.0.0.2]:7073"},
	}, {
		name: "dead and left managers",
		ms: []Member{self, mgr("m3", "10.0.0.3:7073", false),
			mgr("m2", "10.0.0.2:7073", false), mgr("m4", "10.0.0.4:7073", true)},
		want: []rejoinTarget{{"m2", "10.0.0.2:7073"}, {"m3", "10.0.0.3:7073"}},
	}, {
		name: "dead workers and self are not joined",
		ms: []Member{mgr("m1", "10.0.0.1:7073", false),
			{Meta: Meta{Role: "worker", Name: "w1"}, Addr: "10.0.0.9:7073"}},
	}, {
		name: "address now held by an alive member",
		ms: []Member{self, mgr("old", "10.0.0.2:7073", false),
			mgr("new", "10.0.0.2:7073", true)},
	}, {
		name:  "seed never seen, seed of a dead member",
		ms:    []Member{self, mgr("m2", "10.0.0.2:7073", false), mgr("m4", "10.0.0.4:7073", true)},
		seeds: []string{"10.0.0.3", "10.0.0.2:7073", "10.0.0.4"},
		want:  []rejoinTarget{{"10.0.0.3:7073", "10.0.0.3:7073"}, {"m2", "10.0.0.2:7073"}},
	}, {
		name:  "host seed while another is missing",
		ms:    []Member{self, mgr("m2", "10.0.0.2:7073", false), mgr("m3", "10.0.0.3:7073", true)},
		seeds: []string{"m3.example"},
		want:  []rejoinTarget{{"m2", "10.0.0.2:7073"}, {"m3.example:7073", "m3.example:7073"}},
	}, {
		name:  "host seed while no other manager is alive",
		ms:    []Member{self},
		seeds: []string{"m2.example:9000"},
		want:  []rejoinTarget{{"m2.example:9000", "m2.example:9000"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := rejoinTargets(tc.ms, "manager", "m1", tc.seeds)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
