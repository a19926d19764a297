package main

import (
	"fmt"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

const (
	rollApp      = "roll"
	rollReplicas = 4
	rollPoll     = 50 * time.Millisecond
)

// rollSpec is the app of the rolling update and failover benchmarks:
// 4 replicas, batch 1, min_healthy_time 2s.
func (b *bench) rollSpec(image string) cluster.WebApp {
	return cluster.WebApp{Name: rollApp, Image: b.c.Image(image), Replicas: rollReplicas,
		BatchSize: 1, MinHealthyTime: "2s", HealthyDeadline: "30s"}
}

// rollState remembers which image the roll app runs.
type rollState struct {
	image string // "v1" or "v2"; "" before the app exists
}

// next is the other image.
func (r *rollState) next() string {
	if r.image == "v1" {
		return "v2"
	}
	return "v1"
}

// ensureRollApp deploys the roll app with v1 and waits until it is settled,
// unless it runs already.
func (b *bench) ensureRollApp() error {
	if b.roll.image != "" {
		return nil
	}
	d, err := b.deploySpec(b.rollSpec("v1"), "v1-initial")
	if err != nil {
		return err
	}
	b.roll.image = "v1"
	return cluster.WaitFor(90*time.Second, func() error {
		st, err := b.c.AppStatus(rollApp)
		if err != nil {
			return err
		}
		return st.Settled(d.Version)
	})
}

// benchRolling times rolling updates of 4 replicas between v1 and v2,
// from `app deploy` until the deployment is successful. It returns the
// samples, in seconds, for the failover benchmark to compare with.
func (b *bench) benchRolling() ([]float64, error) {
	if err := b.ensureRollApp(); err != nil {
		return nil, err
	}
	var walls []float64
	for i := 1; i <= b.opts.runs; i++ {
		img := b.roll.next()
		_, base, err := b.leaderBase()
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		d, err := b.deploySpec(b.rollSpec(img), fmt.Sprintf("rolling-%d", i))
		if err != nil {
			return nil, err
		}
		b.roll.image = img
		st, err := b.waitDeployment(base, d, t0, 90*time.Second)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		wall := time.Since(t0)
		if st.Deployment.Status != "successful" {
			return nil, fmt.Errorf("run %d: deployment %s ended %s: %s", i,
				d.DeploymentID, st.Deployment.Status, st.Deployment.Description)
		}
		b.say("run %d: rolling update of %d replicas to %s: successful after %s",
			i, rollReplicas, img, wall.Round(time.Millisecond))
		walls = append(walls, secs(wall))
		if err := b.waitSettled(d.Version); err != nil {
			return nil, err
		}
	}
	b.add(row{bench: "3 rolling", what: "4-replica rolling update, batch 1, min_healthy_time 2s: `app deploy` until deployment successful",
		samples: walls, goal: "about 11 s (Nomad 1.6, Swarm: about 19.5 s)",
		verdict: verdictAbout(walls, 11)})
	b.note("rolling: spec: the harness's web app with 4 replicas, batch_size 1, min_healthy_time 2s, health GET /healthz every 500ms, drain_timeout 200ms, stop_timeout 2s; runs alternate v1 -> v2 -> v1; deployment status polled over HTTP every %s", rollPoll)
	return walls, nil
}

// waitDeployment polls the app until deployment d is no longer running.
func (b *bench) waitDeployment(base string, d *deployJSON, t0 time.Time,
	timeout time.Duration) (*restStatus, error) {

	var last string
	for time.Since(t0) < timeout {
		st, err := b.api.appStatus(base, rollApp)
		switch {
		case err != nil:
			last = err.Error()
			// The manager polled may have been killed: ask any other.
			if _, nb, lerr := b.leaderBase(); lerr == nil {
				base = nb
			}
		case st.Deployment == nil || st.Deployment.ID != d.DeploymentID:
			last = "deployment not visible yet"
		case st.Deployment.Status != "running":
			return st, nil
		default:
			last = fmt.Sprintf("placed %d, healthy %d", st.Deployment.Placed, st.Deployment.Healthy)
		}
		time.Sleep(rollPoll)
	}
	return nil, fmt.Errorf("deployment %s still running after %s: %s", d.DeploymentID, timeout, last)
}

// waitSettled waits until the roll app runs only healthy tasks of version.
func (b *bench) waitSettled(version int64) error {
	return cluster.WaitFor(60*time.Second, func() error {
		st, err := b.c.AppStatus(rollApp)
		if err != nil {
			return err
		}
		return st.Settled(version)
	})
}

// verdictAbout says whether the median of xs is within 10% of goal
// seconds, or below it.
func verdictAbout(xs []float64, goal float64) string {
	s := summarize(xs)
	switch {
	case s.n == 0:
		return "not measured"
	case s.median <= goal*1.1:
		return fmt.Sprintf("met (median %.1f s)", s.median)
	default:
		return fmt.Sprintf("NOT met: median %.1f s is %.1f s over", s.median, s.median-goal)
	}
}
