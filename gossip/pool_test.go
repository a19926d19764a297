package gossip

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// startPool starts a pool named name on 127.0.0.1 with a free port.
func startPool(t *testing.T, name string) *Pool {
	t.Helper()
	p, err := New(Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Meta:     Meta{Role: "manager", Address: "127.0.0.1", RaftPort: 7072},
		Logger:   testutil.Logger(t, hclog.Info).Named(name),
	})
	if err != nil {
		t.Fatalf("start pool %q: %v", name, err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// view reports which members p has seen, as name -> alive.
func view(p *Pool) map[string]bool {
	out := make(map[string]bool)
	for _, m := range p.Members() {
		out[m.Meta.Name] = m.Alive
	}
	return out
}

// sees checks that p has every name in want with the given liveness.
func sees(p *Pool, want map[string]bool) error {
	got := view(p)
	for name, alive := range want {
		a, ok := got[name]
		if !ok {
			return fmt.Errorf("%s has not seen %s", p.cfg.Name, name)
		}
		if a != alive {
			return fmt.Errorf("%s sees %s alive=%v, want %v",
				p.cfg.Name, name, a, alive)
		}
	}
	return nil
}

func TestJoinAndDeath(t *testing.T) {
	a := startPool(t, "a")
	b := startPool(t, "b")
	c := startPool(t, "c")

	// b joins a by ip:port; c uses RetryJoin, first with a dead address.
	if n, err := b.Join([]string{a.Addr()}); err != nil || n != 1 {
		t.Fatalf("b joins a: n=%d err=%v", n, err)
	}
	changed := a.Changed()
	c.RetryJoin(t.Context(), []string{a.Addr()})

	all := map[string]bool{"a": true, "b": true, "c": true}
	for _, p := range []*Pool{a, b, c} {
		testutil.WaitFor(t, 5*time.Second, func() error { return sees(p, all) })
	}
	select {
	case <-changed:
	default:
		t.Fatal("a's Changed channel not closed after c joined")
	}
	for _, m := range a.Members() {
		if m.Meta.Role != "manager" || m.Meta.RaftPort != 7072 {
			t.Errorf("member %s: meta %+v not carried", m.Meta.Name, m.Meta)
		}
	}

	// c stops without leaving: the others must declare it dead.
	before := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatalf("shutdown c: %v", err)
	}
	gone := map[string]bool{"a": true, "b": true, "c": false}
	for _, p := range []*Pool{a, b} {
		testutil.WaitFor(t, 10*time.Second, func() error { return sees(p, gone) })
	}
	t.Logf("c seen dead by a and b after %s", time.Since(before))
	for _, m := range a.Members() {
		if m.Meta.Name == "c" && m.Since.Before(before) {
			t.Errorf("c: Since %s not updated at death", m.Since)
		}
		if m.Meta.Name == "c" && m.Addr != c.Addr() {
			t.Errorf("c: Addr %q once dead, want %q", m.Addr, c.Addr())
		}
	}
}

func TestLeave(t *testing.T) {
	a := startPool(t, "a")
	b := startPool(t, "b")
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("b joins a: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		return sees(a, map[string]bool{"b": true})
	})
	if err := b.Leave(time.Second); err != nil {
		t.Fatalf("b leaves: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		return sees(a, map[string]bool{"a": true, "b": false})
	})
}

func TestWithPort(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "ipv4", in: "10.0.0.1", want: "10.0.0.1:7073"},
		{name: "ipv4 with port", in: "10.0.0.1:8000", want: "10.0.0.1:8000"},
		{name: "host", in: "m1", want: "m1:7073"},
		{name: "ipv6", in: "::1", want: "[::1]:7073"},
		{name: "ipv6 with port", in: "[::1]:9", want: "[::1]:9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := withPort(tc.in, DefaultPort); got != tc.want {
				t.Errorf("withPort(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Name: "n", BindAddr: "127.0.0.1"}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{name: "empty name", mutate: func(c *Config) { c.Name = "" }},
		{name: "empty bind", mutate: func(c *Config) { c.BindAddr = "" }},
		{name: "bad port", mutate: func(c *Config) { c.Port = 70000 }},
		{name: "timeout over interval", mutate: func(c *Config) {
			c.ProbeInterval, c.ProbeTimeout = time.Second, 2*time.Second
		}},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.Validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestMetaTooLarge(t *testing.T) {
	_, err := New(Config{
		Name: "big", BindAddr: "127.0.0.1",
		Meta: Meta{Address: strings.Repeat("x", MaxMetaSize)},
	})
	if err == nil {
		t.Fatal("meta over the limit accepted")
	}
}
