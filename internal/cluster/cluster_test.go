package cluster

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/spec"
)

func TestWebAppYAMLLoads(t *testing.T) {
	for _, tc := range []struct {
		name string
		app  WebApp
	}{
		{"defaults", WebApp{Name: "web", Image: "127.0.0.1:5000/web:v1", Replicas: 3}},
		{"everything", WebApp{Name: "web", Image: "127.0.0.1:5000/web:v2", Replicas: 1,
			BatchSize: 2, MinHealthyTime: "2s", HealthyDeadline: "8s", ProgressDeadline: "2m",
			DrainTimeout: "1s", AutoRollback: true, Env: map[string]string{"MODE": "unhealthy"}}},
		{"tcp check", WebApp{Name: "web", Image: "127.0.0.1:5000/web:v3", Replicas: 1, TCPCheck: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := spec.Load([]byte(tc.app.YAML()))
			if err != nil {
				t.Fatalf("spec.Load: %v\n%s", err, tc.app.YAML())
			}
			if s.Name != tc.app.Name || s.Image != tc.app.Image || int(s.Replicas) != tc.app.Replicas {
				t.Errorf("loaded %s %s %d, want %s %s %d", s.Name, s.Image, s.Replicas,
					tc.app.Name, tc.app.Image, tc.app.Replicas)
			}
			if got := time.Duration(s.Update.StopTimeout); got != 2*time.Second {
				t.Errorf("stop_timeout %s, want 2s", got)
			}
			if s.Update.GetAutoRollback() != tc.app.AutoRollback {
				t.Errorf("auto_rollback %t, want %t", s.Update.GetAutoRollback(), tc.app.AutoRollback)
			}
			for k, v := range tc.app.Env {
				if s.Env[k] != v {
					t.Errorf("env %s=%q, want %q", k, s.Env[k], v)
				}
			}
		})
	}
}

func TestNumDecodes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Num
		bad  bool
	}{
		{`3`, 3, false},
		{`"42"`, 42, false},
		{`null`, 0, false},
		{`"x"`, 0, true},
		{`1.5`, 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var n Num
			err := json.Unmarshal([]byte(tc.in), &n)
			if (err != nil) != tc.bad {
				t.Fatalf("err = %v, want error: %t", err, tc.bad)
			}
			if !tc.bad && n != tc.want {
				t.Errorf("got %d, want %d", n, tc.want)
			}
		})
	}
}

func TestWithFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "status", "web"}, "app status -o json web"},
		{[]string{"app", "ls"}, "app ls -o json"},
		{[]string{"cluster", "join-token", "worker"}, "cluster join-token -o json worker"},
		{[]string{"manager"}, "manager -o json"},
		{[]string{"app"}, "app -o json"},
	} {
		got := strings.Join(withFlags(tc.args, "-o", "json"), " ")
		if got != tc.want {
			t.Errorf("withFlags(%v) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestSettled(t *testing.T) {
	healthy := func(id string, v int64) Task {
		return Task{ID: id, Node: "w1", Version: Num(v), State: "running", Healthy: true}
	}
	for _, tc := range []struct {
		name string
		st   AppStatus
		ok   bool
	}{
		{"settled", AppStatus{Name: "a", Version: 2, Replicas: 2,
			Tasks: []Task{healthy("t1", 2), healthy("t2", 2)}}, true},
		{"stopped history ignored", AppStatus{Name: "a", Version: 2, Replicas: 1,
			Tasks: []Task{healthy("t1", 2), {ID: "t0", Version: 1, State: "stopped"}}}, true},
		{"old version left", AppStatus{Name: "a", Version: 2, Replicas: 2,
			Tasks: []Task{healthy("t1", 2), healthy("t2", 1)}}, false},
		{"too few", AppStatus{Name: "a", Version: 2, Replicas: 3,
			Tasks: []Task{healthy("t1", 2), healthy("t2", 2)}}, false},
		{"not healthy", AppStatus{Name: "a", Version: 2, Replicas: 1,
			Tasks: []Task{{ID: "t1", Version: 2, State: "running"}}}, false},
		{"deployment running", AppStatus{Name: "a", Version: 2, Replicas: 1,
			Tasks:      []Task{healthy("t1", 2)},
			Deployment: &Deployment{ID: "d", Status: "running", ToVersion: 2}}, false},
		{"other version", AppStatus{Name: "a", Version: 3, Replicas: 1,
			Tasks: []Task{healthy("t1", 2)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.st.Settled(2)
			if (err == nil) != tc.ok {
				t.Errorf("Settled(2) = %v, want ok: %t", err, tc.ok)
			}
		})
	}
}

func TestWaitFor(t *testing.T) {
	t.Run("holds", func(t *testing.T) {
		n := 0
		err := WaitFor(5*time.Second, func() error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("names the last reason", func(t *testing.T) {
		n := 0
		err := WaitFor(300*time.Millisecond, func() error {
			n++
			return errors.New("task t1 not healthy")
		})
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "task t1 not healthy") {
			t.Fatalf("err = %v, want a timeout naming the reason", err)
		}
	})
	t.Run("abort", func(t *testing.T) {
		start := time.Now()
		err := WaitFor(time.Minute, func() error {
			return errors.Join(ErrAbort, errors.New("m1 exited"))
		})
		if !errors.Is(err, ErrAbort) || time.Since(start) > time.Second {
			t.Fatalf("err = %v after %s, want ErrAbort at once", err, time.Since(start))
		}
	})
}
