package cluster

import (
	"fmt"
	"strings"
)

// WebApp describes an app of the test web image. YAML renders it as a spec
// with the short timings the tests use; zero fields take those defaults.
type WebApp struct {
	Name     string
	Image    string // a reference from Cluster.Image
	Replicas int

	BatchSize       int    // default 1
	MinHealthyTime  string // default "1s"
	HealthyDeadline string // default "15s"
	// ProgressDeadline defaults to "1m".
	ProgressDeadline string
	DrainTimeout     string // default "200ms": tests without traffic need no drain
	AutoRollback     bool
	// TCPCheck makes the health check a TCP connect to the port instead
	// of GET /healthz.
	TCPCheck bool
	Env      map[string]string
	// Ingress publishes the http port on every worker at this port when
	// non-zero.
	Ingress int
}

// YAML returns the spec as `hivemind app deploy -f` reads it.
func (a WebApp) YAML() string {
	batch := a.BatchSize
	if batch == 0 {
		batch = 1
	}
	minHealthy := or(a.MinHealthyTime, "1s")
	deadline := or(a.HealthyDeadline, "15s")
	drain := or(a.DrainTimeout, "200ms")
	progress := or(a.ProgressDeadline, "1m")

	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nimage: %s\nreplicas: %d\n", a.Name, a.Image, a.Replicas)
	if len(a.Env) > 0 {
		b.WriteString("env:\n")
		for k, v := range a.Env {
			fmt.Fprintf(&b, "  %s: %q\n", k, v)
		}
	}
	b.WriteString("ports:\n  - name: http\n    protocol: http\n")
	if a.Ingress != 0 {
		fmt.Fprintf(&b, "    ingress: %d\n", a.Ingress)
	}
	if a.TCPCheck {
		b.WriteString("health:\n  tcp: {port: http}\n")
	} else {
		b.WriteString("health:\n  http: {port: http, path: /healthz}\n")
	}
	b.WriteString("  interval: 500ms\n  timeout: 1s\n")
	fmt.Fprintf(&b, "update:\n  batch_size: %d\n  min_healthy_time: %s\n", batch, minHealthy)
	fmt.Fprintf(&b, "  healthy_deadline: %s\n  progress_deadline: %s\n", deadline, progress)
	fmt.Fprintf(&b, "  auto_rollback: %t\n  drain_timeout: %s\n  stop_timeout: 2s\n",
		a.AutoRollback, drain)
	return b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
