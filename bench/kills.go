package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

const (
	killsApp = "kills"
	// busyClients is the number of writers that keep the cluster busy
	// in the busy series.
	busyClients = 16
	// probeTimeout bounds each write of the probe: a write forwarded to
	// the dead leader must fail rather than hang.
	probeTimeout = time.Second
	// probePace is the pause between two failed probe writes, so that
	// the probe does not spin on an instant "no leader" answer.
	probePace = 5 * time.Millisecond
)

// killResult is one leader kill of the kills benchmark.
type killResult struct {
	leader, newLeader string
	toLeader          time.Duration // kill until a survivor names a new leader
	toWrite           time.Duration // kill until a write sent after it is acknowledged
	logLeader         time.Duration // kill until "entering leader state" in the new leader's log; -1 if absent
	busyWrites        int64         // writes the busy clients had acknowledged from the kill on
	busyRate          float64       // their acknowledged writes per second before the kill
}

// benchKills kills the Raft leader with SIGKILL opts.kills times on an
// idle cluster and as many times on a busy one (busyClients writers
// sending `app scale` back to back through every manager), with the
// timeouts that ship as defaults. For each kill it measures the time
// until a survivor names a new leader (cluster status polled on both
// survivors every 20ms) and until the first write sent after the kill is
// acknowledged (a probe sending `app scale` to the survivors in turn,
// each write bounded by 1s). The killed manager is restarted and has
// caught up before the next kill.
func (b *bench) benchKills() error {
	if _, err := b.deploySpec(cluster.WebApp{Name: killsApp, Image: b.c.Image("v1")}, "kills"); err != nil {
		return err
	}
	for _, busy := range []bool{false, true} {
		mode := "idle"
		if busy {
			mode = fmt.Sprintf("busy (%d writers)", busyClients)
		}
		var toLeader, toWrite, logLeader []time.Duration
		var writes int64
		var rates []float64
		for i := 1; i <= b.opts.kills; i++ {
			r, err := b.killOnce(busy)
			if err != nil {
				return fmt.Errorf("%s, kill %d: %w", mode, i, err)
			}
			b.say("%s, kill %d: killed %s; %s named leader after %s (its log: leader after %s); first write after the kill acknowledged after %s; busy writers: %.0f writes/s before the kill",
				mode, i, r.leader, r.newLeader, ms(r.toLeader), ms(r.logLeader), ms(r.toWrite), r.busyRate)
			toLeader = append(toLeader, r.toLeader)
			toWrite = append(toWrite, r.toWrite)
			if r.logLeader >= 0 {
				logLeader = append(logLeader, r.logLeader)
			}
			writes += r.busyWrites
			rates = append(rates, r.busyRate)
		}
		b.addPercentiles("kills "+mode, "SIGKILL of the leader until a survivor names a new leader", toLeader)
		b.addPercentiles("kills "+mode, "the same from the new leader's log (\"entering leader state\")", logLeader)
		b.addPercentiles("kills "+mode, "SIGKILL of the leader until the first write sent after it is acknowledged", toWrite)
		if busy {
			s := summarize(rates)
			b.note("kills: before each busy kill the %d writers had %.0f writes/s acknowledged (median; min %.0f, max %.0f), each run starting them afresh; from the kills until the measurements ended they had %d acknowledged in all",
				busyClients, s.median, s.min, s.max, writes)
		}
	}
	b.note("kills: shipped defaults (Raft heartbeat timeout 300 ms, election timeout 300 ms, leader lease 150 ms); p99 is the nearest rank, so with 20 kills it is the slowest")
	b.note("kills: the killed manager is restarted on its data dir and has caught up before the next kill; the leader is whichever manager won, so kills spread over all three")
	return nil
}

// addPercentiles adds a row of the sample (median, min, max) and one of its
// p50 and p99.
func (b *bench) addPercentiles(bench, what string, xs []time.Duration) {
	var samples []float64
	for _, x := range xs {
		samples = append(samples, secs(x))
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	b.add(row{bench: bench, what: what, samples: samples,
		goal: fmt.Sprintf("p50 %s, p99 %s", ms(percentile(sorted, 50)), ms(percentile(sorted, 99)))})
}

func (b *bench) killOnce(busy bool) (*killResult, error) {
	leader, lbase, err := b.leaderBase()
	if err != nil {
		return nil, err
	}
	// Every manager must be back and caught up, or the kill would leave
	// no majority.
	if err := b.allCaughtUp(lbase); err != nil {
		return nil, err
	}
	var survivors []string
	for _, m := range b.c.Managers() {
		if m.Name != leader {
			survivors = append(survivors, b.managerBase(m.Name))
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	if busy {
		var bases []string
		for _, m := range b.c.Managers() {
			bases = append(bases, b.managerBase(m.Name))
		}
		for i := range busyClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.busyWriter(ctx, bases[i%len(bases)], &acked)
			}()
		}
		// The writers must be writing before the kill.
		if err := cluster.WaitFor(10*time.Second, func() error {
			if n := acked.Load(); n < 50 {
				return fmt.Errorf("busy writers acknowledged %d writes, want 50 before the kill", n)
			}
			return nil
		}); err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
	}
	start := acked.Load()

	r := &killResult{leader: leader}
	kill := time.Now()
	r.busyRate = float64(start) / kill.Sub(t0).Seconds()
	if err := b.c.KillManager(leader); err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	var probe sync.WaitGroup
	probe.Add(2)
	go func() {
		defer probe.Done()
		r.newLeader, r.toLeader = b.watchLeader(wctx, survivors, leader, kill)
	}()
	go func() {
		defer probe.Done()
		r.toWrite = b.firstWrite(wctx, survivors, kill)
	}()
	probe.Wait()
	wcancel()
	r.busyWrites = acked.Load() - start
	cancel()
	wg.Wait()
	if r.newLeader == "" || r.toWrite == 0 {
		return nil, fmt.Errorf("after killing %s: new leader %q after %s, first write after %s (0: not within 30s)",
			leader, r.newLeader, r.toLeader, r.toWrite)
	}
	r.logLeader = b.logSince(r.newLeader, "entering leader state", kill)
	return r, b.rejoin(leader)
}

// allCaughtUp waits until every manager is leader or follower and within
// a few entries of the leader's log.
func (b *bench) allCaughtUp(lbase string) error {
	return cluster.WaitFor(60*time.Second, func() error {
		st, err := b.api.clusterStatus(lbase)
		if err != nil {
			return err
		}
		var last int64
		for _, m := range st.Managers {
			if m.State == "leader" {
				last = int64(m.LastIndex)
			}
		}
		for _, m := range st.Managers {
			if m.State != "leader" && m.State != "follower" {
				return fmt.Errorf("manager %s is %s", m.Name, m.State)
			}
			if int64(m.AppliedIndex)+5 < last {
				return fmt.Errorf("manager %s applied %d of %d", m.Name, m.AppliedIndex, last)
			}
		}
		return nil
	})
}

// busyWriter sends `app scale kills 0` to base back to back until ctx
// ends, counting acknowledged writes.
func (b *bench) busyWriter(ctx context.Context, base string, acked *atomic.Int64) {
	client := &http.Client{Timeout: probeTimeout}
	defer client.CloseIdleConnections()
	url := base + "/v1/apps/" + killsApp + "/scale"
	for ctx.Err() == nil {
		if post(client, url, []byte(`{"replicas":0}`)) == nil {
			acked.Add(1)
		} else {
			time.Sleep(probePace)
		}
	}
}

// firstWrite sends writes to the survivors in turn, from kill on, and
// returns the time from kill until one is acknowledged; 0 if none is
// before ctx ends.
func (b *bench) firstWrite(ctx context.Context, survivors []string, kill time.Time) time.Duration {
	client := &http.Client{Timeout: probeTimeout}
	defer client.CloseIdleConnections()
	for i := 0; ctx.Err() == nil; i++ {
		url := survivors[i%len(survivors)] + "/v1/apps/" + killsApp + "/scale"
		if post(client, url, []byte(`{"replicas":0}`)) == nil {
			return time.Since(kill)
		}
		time.Sleep(probePace)
	}
	return 0
}
