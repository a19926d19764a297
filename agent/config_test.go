package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Name = "w1"
		c.Join = []string{"127.0.0.1"}
		return c
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{name: "defaults with join", mutate: func(*Config) {}},
		{name: "join with port", mutate: func(c *Config) { c.Join = []string{"10.0.0.1:9000"} }},
		{name: "no name", mutate: func(c *Config) { c.Name = "" }, wantErr: true},
		{name: "no data dir", mutate: func(c *Config) { c.DataDir = "" }, wantErr: true},
		{name: "bind not an IP", mutate: func(c *Config) { c.BindAddr = "localhost" }, wantErr: true},
		{name: "gossip port", mutate: func(c *Config) { c.GossipPort = 70000 }, wantErr: true},
		{name: "dns port", mutate: func(c *Config) { c.DNSPort = -1 }, wantErr: true},
		{name: "no join", mutate: func(c *Config) { c.Join = nil }, wantErr: true},
		{name: "bad join port", mutate: func(c *Config) { c.Join = []string{"1.2.3.4:x"} }, wantErr: true},
		{name: "empty join", mutate: func(c *Config) { c.Join = []string{""} }, wantErr: true},
		{name: "report interval", mutate: func(c *Config) { c.ReportInterval = 0 }, wantErr: true},
		{name: "no socket", mutate: func(c *Config) { c.ContainerdSocket = "" }, wantErr: true},
		{name: "runtime given, no socket", mutate: func(c *Config) {
			c.ContainerdSocket = ""
			c.Runtime = newFakeRuntime()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestWithDefaultPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.1", "10.0.0.1:7071"},
		{"10.0.0.1:9000", "10.0.0.1:9000"},
		{"::1", "[::1]:7071"},
		{"[::1]:9000", "[::1]:9000"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := withDefaultPort(tt.in, DefaultManagerRPCPort)
			if err != nil || got != tt.want {
				t.Errorf("withDefaultPort(%q) = %q, %v; want %q",
					tt.in, got, err, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("admin-ui"); got != "ADMIN_UI" {
		t.Errorf("envName(admin-ui) = %q", got)
	}
}

func TestStopTimeout(t *testing.T) {
	tk := task("t1")
	if d := stopTimeout(tk); d != defaultStopTimeout {
		t.Errorf("no stop_timeout: %s, want %s", d, defaultStopTimeout)
	}
	tk.Spec.Update = &pb.UpdateSpec{StopTimeout: int64(2 * time.Second)}
	if d := stopTimeout(tk); d != 2*time.Second {
		t.Errorf("stop_timeout 2s: got %s", d)
	}
}

func TestCheckerPace(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name        string
		interval    time.Duration
		startPeriod time.Duration
		startedAgo  time.Duration
		passed      bool
		want        time.Duration
	}{
		{"starting task checks fast", time.Second, 0, time.Second, false, startupCheckInterval},
		{"short interval is kept", 50 * time.Millisecond, 0, time.Second, false, 50 * time.Millisecond},
		{"after the first pass, the interval", time.Second, 0, time.Second, true, time.Second},
		{"never healthy past the window", time.Second, 0, 11 * time.Second, false, time.Second},
		{"a long start period widens the window", time.Second, time.Minute, 30 * time.Second, false, startupCheckInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &checker{interval: tt.interval, startPeriod: tt.startPeriod,
				started: now.Add(-tt.startedAgo)}
			if got := c.next(tt.passed); got != tt.want {
				t.Errorf("next(%v) = %s, want %s", tt.passed, got, tt.want)
			}
		})
	}
}
