package main

import (
	"fmt"
	"time"
)

// rollbackDeadline is the healthy_deadline of the broken rollout.
const rollbackDeadline = 10 * time.Second

// benchRollback times the automatic rollback of a broken version: the roll
// app, settled on a good image, is deployed with v3, whose tasks start but
// never pass their check, until the deployment ends rolled_back. The goal
// is healthy_deadline plus one batch; one batch is taken as a quarter of
// the rolling update's median (4 replicas, batch 1), or 2.75 s when the
// rolling benchmark did not run.
func (b *bench) benchRollback(rolling []float64) error {
	if err := b.ensureRollApp(); err != nil {
		return err
	}
	batch := 2.75
	if s := summarize(rolling); s.n > 0 {
		batch = s.median / rollReplicas
	}
	goal := rollbackDeadline.Seconds() + batch

	var walls []float64
	for i := 1; i <= b.opts.runs; i++ {
		good := b.roll.image
		spec := b.rollSpec("v3")
		spec.HealthyDeadline = rollbackDeadline.String()
		spec.AutoRollback = true
		_, base, err := b.leaderBase()
		if err != nil {
			return err
		}

		t0 := time.Now()
		d, err := b.deploySpec(spec, fmt.Sprintf("rollback-%d", i))
		if err != nil {
			return err
		}
		st, err := b.waitDeployment(base, d, t0, 90*time.Second)
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		wall := time.Since(t0)
		if st.Deployment.Status != "rolled_back" {
			return fmt.Errorf("run %d: deployment %s ended %s, want rolled_back: %s",
				i, d.DeploymentID, st.Deployment.Status, st.Deployment.Description)
		}
		b.say("run %d: broken v3 rolled back to %s after %s", i, good,
			wall.Round(time.Millisecond))
		walls = append(walls, secs(wall))

		// Put the good image back as a new version, so that the next
		// run starts from a settled app whose stable version is good.
		next, err := b.deploySpec(b.rollSpec(good), fmt.Sprintf("rollback-%d-restore", i))
		if err != nil {
			return err
		}
		if err := b.waitSettled(next.Version); err != nil {
			return err
		}
	}

	b.add(row{bench: "5 rollback",
		what:    fmt.Sprintf("broken version (never healthy), healthy_deadline %s, auto_rollback: `app deploy` until deployment rolled_back", rollbackDeadline),
		samples: walls,
		goal:    fmt.Sprintf("healthy_deadline plus one batch: %.1f s (Nomad waits for its progress deadline: 65 s)", goal),
		verdict: verdictAbout(walls, goal)})
	b.note("rollback: one batch taken as %.2f s (a quarter of the rolling update's median, or 2.75 s without it)", batch)
	return nil
}
