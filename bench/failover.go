package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

const (
	failoverPoll = 20 * time.Millisecond
	// killBefore is how long before the rollout's next step is due the
	// leader is killed: late enough that the old leader has not taken
	// the step (its engine ticks every 250ms), so the new one must.
	killBefore = 300 * time.Millisecond
	minHealthy = 2 * time.Second
)

// failoverResult is one leader kill in a rolling update.
type failoverResult struct {
	leader, newLeader string
	toLeader          time.Duration // kill until a survivor names a new leader
	toMove            time.Duration // kill until the first plan effect
	due               time.Duration // kill until the step was due
	wall              time.Duration // app deploy until deployment successful
	// From the new leader's own log (hclog, millisecond stamps): kill
	// until its heartbeat timeout fired and until it entered the leader
	// state; -1 when not found.
	logTimeout, logLeader time.Duration
	early                 bool // the step was taken before the kill
}

// benchFailover runs 4-replica rolling updates (as benchRolling) and kills
// the leader with SIGKILL just before the rollout's second step is due:
// when the first new task has been healthy for min_healthy_time minus
// killBefore. It measures the time until a survivor names a new leader
// (cluster status polled on both survivors every 20ms), until the rollout
// moves again (the first effect of a plan: a new task, a task told to
// stop, or a change of the deployment's counters or status, polled every
// 20ms), and the wall time of the whole update. The killed manager is
// restarted, and has caught up, before the next run.
func (b *bench) benchFailover(rolling []float64) error {
	if err := b.ensureRollApp(); err != nil {
		return err
	}
	var toLeader, toMove, stall, walls, logLeader, logTimeout []float64
	early := 0
	for i := 1; i <= b.opts.runs; i++ {
		r, err := b.failoverOnce(i)
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		b.say("run %d: killed leader %s; %s named leader after %s (its log: election timeout after %s, leader after %s); rollout moved %s after the kill (step was due %s after it); update done in %s",
			i, r.leader, r.newLeader, ms(r.toLeader), ms(r.logTimeout), ms(r.logLeader),
			ms(r.toMove), ms(r.due), ms(r.wall))
		if r.logLeader >= 0 {
			logLeader = append(logLeader, secs(r.logLeader))
		}
		if r.logTimeout >= 0 {
			logTimeout = append(logTimeout, secs(r.logTimeout))
		}
		if r.early {
			early++
			b.say("run %d: the step was taken before the kill; its move figures are left out", i)
		} else {
			toMove = append(toMove, secs(r.toMove))
			stall = append(stall, secs(r.toMove-r.due))
		}
		toLeader = append(toLeader, secs(r.toLeader))
		walls = append(walls, secs(r.wall))
	}

	b.add(row{bench: "2 failover", what: "SIGKILL of the leader until a survivor names a new leader",
		samples: toLeader, goal: "within 1 s (Nomad: about 3 s)", verdict: verdictWithin(toLeader, 1)})
	b.add(row{bench: "2 failover", what: "the same from the new leader's log: SIGKILL until its heartbeat timeout fired",
		samples: logTimeout})
	b.add(row{bench: "2 failover", what: "the same from the new leader's log: SIGKILL until \"entering leader state\"",
		samples: logLeader, goal: "within 1 s", verdict: verdictWithin(logLeader, 1)})
	b.add(row{bench: "2 failover", what: "SIGKILL of the leader until the rollout moves again (first plan effect)",
		samples: toMove})
	b.add(row{bench: "2 failover", what: "delay of the step that was due 0.3 s after the kill (move minus due time)",
		samples: stall, goal: "kill adds at most 1.5 s (Nomad: about 4 s)", verdict: verdictWithin(stall, 1.5)})
	added := "not measured (run rolling too)"
	if len(rolling) > 0 {
		var diffs []float64
		base := summarize(rolling).median
		for _, w := range walls {
			diffs = append(diffs, w-base)
		}
		b.add(row{bench: "2 failover", what: "4-replica rolling update with the leader killed, `app deploy` until successful",
			samples: walls})
		b.add(row{bench: "2 failover", what: "the same minus the median update without a kill (row 3)",
			samples: diffs, goal: "kill adds at most 1.5 s (Nomad: about 4 s)",
			verdict: verdictMedian(diffs, 1.5, rolling)})
		added = ""
	}
	if added != "" {
		b.note("failover: added wall time %s", added)
	}
	if early > 0 {
		b.note("failover: in %d run(s) the old leader took the step before the kill; those runs count for the new-leader figure only", early)
	}
	b.note("failover: the leader is killed %s before the update's second step is due (first new task healthy_since + min_healthy_time 2s), so the new leader must take that step; the delay includes the engine's usual tick (every 250ms) and Raft commit, which a run without a kill also pays", killBefore)
	b.note("failover: times are taken when the poll's answer arrives; the killed manager is restarted on its data dir and waited for between runs")
	return nil
}

func (b *bench) failoverOnce(run int) (*failoverResult, error) {
	r := &failoverResult{}
	leader, base, err := b.leaderBase()
	if err != nil {
		return nil, err
	}
	r.leader = leader
	img := b.roll.next()
	t0 := time.Now()
	d, err := b.deploySpec(b.rollSpec(img), fmt.Sprintf("failover-%d", run))
	if err != nil {
		return nil, err
	}
	b.roll.image = img

	// The first task of the new version to turn healthy fixes when the
	// next step is due.
	var since int64
	deadline := time.Now().Add(60 * time.Second)
	for since == 0 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no task of version %d healthy after 60s", d.Version)
		}
		st, err := b.api.appStatus(base, rollApp)
		if err == nil {
			for _, t := range st.Tasks {
				if int64(t.Version) == d.Version && t.live() && t.Healthy && t.HealthySince > 0 {
					since = int64(t.HealthySince)
				}
			}
		}
		time.Sleep(failoverPoll)
	}
	due := time.Unix(0, since).Add(minHealthy)
	time.Sleep(time.Until(due.Add(-killBefore)))

	s0, err := b.api.appStatus(base, rollApp)
	if err != nil {
		return nil, err
	}
	r.early = s0.Deployment == nil || s0.Deployment.ID != d.DeploymentID ||
		s0.Deployment.Healthy > 0
	kill := time.Now()
	if err := b.c.KillManager(leader); err != nil {
		return nil, err
	}
	r.due = due.Sub(kill)

	var survivors []string
	for _, m := range b.c.Managers() {
		if m.Name != leader {
			survivors = append(survivors, b.managerBase(m.Name))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.newLeader, r.toLeader = b.watchLeader(ctx, survivors, leader, kill)
	}()
	go func() {
		defer wg.Done()
		r.toMove = b.watchMove(ctx, survivors, s0, kill)
	}()
	wg.Wait()
	if r.newLeader == "" || r.toMove == 0 {
		return nil, fmt.Errorf("after killing %s: new leader %q after %s, rollout moved after %s (0: not within 30s)",
			leader, r.newLeader, r.toLeader, r.toMove)
	}

	r.logTimeout = b.logSince(r.newLeader, "heartbeat timeout reached, starting election", kill)
	r.logLeader = b.logSince(r.newLeader, "entering leader state", kill)

	nb := b.managerBase(r.newLeader)
	st, err := b.waitDeployment(nb, d, t0, 90*time.Second)
	if err != nil {
		return nil, err
	}
	r.wall = time.Since(t0)
	if st.Deployment.Status != "successful" {
		return nil, fmt.Errorf("deployment %s ended %s: %s", d.DeploymentID,
			st.Deployment.Status, st.Deployment.Description)
	}
	if err := b.waitSettled(d.Version); err != nil {
		return nil, err
	}
	return r, b.rejoin(leader)
}

// logSince finds the last line of a member's log that contains msg and
// returns its time stamp minus t; -1 when there is none after t.
func (b *bench) logSince(name, msg string, t time.Time) time.Duration {
	lines, err := b.c.Grep(name, msg)
	if err != nil || len(lines) == 0 {
		return -1
	}
	stamp, _, _ := strings.Cut(lines[len(lines)-1], " ")
	at, err := time.Parse(hclogTime, stamp)
	if err != nil || at.Before(t.Truncate(time.Millisecond)) {
		return -1
	}
	return at.Sub(t)
}

// hclogTime is hclog's time stamp format.
const hclogTime = "2006-01-02T15:04:05.000Z0700"

// watchLeader polls cluster status on every survivor until one names a
// leader other than old; it returns the name and the time since kill.
func (b *bench) watchLeader(ctx context.Context, bases []string, old string,
	kill time.Time) (string, time.Duration) {

	type found struct {
		name string
		at   time.Duration
	}
	ch := make(chan found, len(bases))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, base := range bases {
		go func() {
			for ctx.Err() == nil {
				st, err := b.api.clusterStatus(base)
				if err == nil && st.Leader != "" && st.Leader != old {
					ch <- found{st.Leader, time.Since(kill)}
					return
				}
				time.Sleep(failoverPoll)
			}
		}()
	}
	select {
	case f := <-ch:
		return f.name, f.at
	case <-ctx.Done():
		return "", 0
	}
}

// watchMove polls the app on the survivors, in turn, until its state
// shows a plan applied since s0; it returns the time since kill.
func (b *bench) watchMove(ctx context.Context, bases []string, s0 *restStatus,
	kill time.Time) time.Duration {

	for i := 0; ctx.Err() == nil; i++ {
		st, err := b.api.appStatus(bases[i%len(bases)], rollApp)
		if err == nil && planned(s0, st) {
			return time.Since(kill)
		}
		time.Sleep(failoverPoll)
	}
	return 0
}

// planned reports whether st shows the effect of a plan not in s0: a new
// task, a task told to stop, or a change of the deployment's counters or
// status. Changes that workers report (task state, health) do not count.
func planned(s0, st *restStatus) bool {
	before := map[string]restTask{}
	for _, t := range s0.Tasks {
		before[t.ID] = t
	}
	for _, t := range st.Tasks {
		old, ok := before[t.ID]
		if !ok || old.Desired != t.Desired {
			return true
		}
	}
	d0, d := s0.Deployment, st.Deployment
	if d0 == nil || d == nil {
		return d0 != d
	}
	return d0.ID != d.ID || d0.Placed != d.Placed || d0.Healthy != d.Healthy ||
		d0.Status != d.Status || d0.RollingBack != d.RollingBack ||
		d0.Failures != d.Failures
}

// rejoin restarts a killed manager and waits until all managers are
// leader or follower and it has caught up with the leader's log.
func (b *bench) rejoin(name string) error {
	if err := b.c.Restart(name); err != nil {
		return err
	}
	base := b.managerBase(name)
	return cluster.WaitFor(60*time.Second, func() error {
		st, err := b.api.clusterStatus(base)
		if err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("%s knows no leader", name)
		}
		var applied, leaderIdx int64
		for _, m := range st.Managers {
			if m.State != "leader" && m.State != "follower" {
				return fmt.Errorf("manager %s is %s", m.Name, m.State)
			}
			if m.Name == name {
				applied = int64(m.AppliedIndex)
			}
			if m.State == "leader" {
				leaderIdx = int64(m.LastIndex)
			}
		}
		if applied+5 < leaderIdx {
			return fmt.Errorf("%s applied %d of %d", name, applied, leaderIdx)
		}
		return nil
	})
}

// verdictWithin says whether every sample is at most goal seconds, and
// if not, how many are.
func verdictWithin(xs []float64, goal float64) string {
	s := summarize(xs)
	within := 0
	for _, x := range xs {
		if x <= goal {
			within++
		}
	}
	switch {
	case s.n == 0:
		return "not measured"
	case within == s.n:
		return fmt.Sprintf("met in all %d runs", s.n)
	default:
		return fmt.Sprintf("NOT met: %d of %d runs within %g s (median %.2f s, max %.2f s)",
			within, s.n, goal, s.median, s.max)
	}
}

// verdictMedian judges a difference of wall times by its median: single
// runs are as noisy as the updates without a kill they are compared with.
func verdictMedian(diffs []float64, goal float64, base []float64) string {
	s, b := summarize(diffs), summarize(base)
	word := "met"
	if s.median > goal {
		word = "NOT met"
	}
	return fmt.Sprintf("%s by the median (%.2f s); updates without a kill alone spread over %.1f s",
		word, s.median, b.max-b.min)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
