package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

const tputApp = "tput"

// tputResult is one throughput run.
type tputResult struct {
	ok, failed int
	elapsed    time.Duration
	latencies  []time.Duration // of the writes that succeeded, sorted
	firstErr   string
	applied    int64 // growth of the leader's applied index
}

// benchThroughput measures Raft writes through the API: N clients, each
// sending `app scale tput 0` (POST /v1/apps/tput/scale) back to back for
// the run's duration over keep-alive connections. The app has 0 replicas,
// so no container starts; every scale is still one Raft entry (the API
// proposes it whether or not the value changes, and the state machine
// stores the app again), which the growth of the applied index checks.
// Writes go to the leader; the largest N also runs through a follower,
// which forwards each write to the leader.
func (b *bench) benchThroughput() error {
	if _, err := b.deploySpec(cluster.WebApp{Name: tputApp, Image: b.c.Image("v1")}, "tput"); err != nil {
		return err
	}
	leader, lbase, err := b.leaderBase()
	if err != nil {
		return err
	}
	follower := ""
	for _, m := range b.c.Managers() {
		if m.Name != leader && b.c.Running(m.Name) {
			follower = m.Name
			break
		}
	}

	type target struct{ via, base string }
	type job struct {
		n int
		t target
	}
	var jobs []job
	for _, n := range b.opts.clients {
		jobs = append(jobs, job{n, target{"leader " + leader, lbase}})
	}
	if follower != "" {
		n := slices.Max(b.opts.clients)
		jobs = append(jobs, job{n, target{"follower " + follower, b.managerBase(follower)}})
	}

	for _, j := range jobs {
		r, err := b.throughputOnce(j.t.base, lbase, j.n)
		if err != nil {
			return err
		}
		rate := float64(r.ok) / r.elapsed.Seconds()
		p50, p99 := percentile(r.latencies, 50), percentile(r.latencies, 99)
		b.say("%d clients via %s: %d writes in %s = %.0f writes/s, p50 %s, p99 %s, %d failed, applied index +%d",
			j.n, j.t.via, r.ok, ms(r.elapsed), rate, p50, p99, r.failed, r.applied)
		what := fmt.Sprintf("%d client(s) via the %s, %s", j.n, j.t.via, ms(r.elapsed))
		b.add(row{bench: "4 throughput", what: what + ": writes/s",
			samples: []float64{rate}, format: func(x float64) string { return fmt.Sprintf("%.0f /s", x) }})
		b.add(row{bench: "4 throughput", what: what + ": latency p50",
			samples: []float64{secs(p50)}, format: millis})
		b.add(row{bench: "4 throughput", what: what + ": latency p99",
			samples: []float64{secs(p99)}, format: millis})
		b.note("throughput: %d client(s) via the %s: %d writes succeeded, %d failed%s; the leader's applied index grew by %d",
			j.n, j.t.via, r.ok, r.failed, firstErrNote(r.firstErr), r.applied)
	}
	b.note("throughput: one run of %s per row (no median: a single long run); latencies are per HTTP request, client to answer", b.opts.duration)
	return nil
}

func firstErrNote(s string) string {
	if s == "" {
		return ""
	}
	return " (first error: " + s + ")"
}

func millis(x float64) string { return fmt.Sprintf("%.1f ms", x*1000) }

// throughputOnce runs n clients against base for the configured duration.
// leaderBase is where the applied index is read.
func (b *bench) throughputOnce(base, leaderBase string, n int) (*tputResult, error) {
	before, err := b.appliedIndex(leaderBase)
	if err != nil {
		return nil, err
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n},
	}
	defer client.CloseIdleConnections()
	url := base + "/v1/apps/" + tputApp + "/scale"
	body := []byte(`{"replicas":0}`)

	ctx, cancel := context.WithTimeout(context.Background(), b.opts.duration)
	defer cancel()
	var (
		mu  sync.Mutex
		res tputResult
		wg  sync.WaitGroup
	)
	t0 := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			ok, failed, firstErr := 0, 0, ""
			for ctx.Err() == nil {
				s := time.Now()
				err := post(client, url, body)
				d := time.Since(s)
				if ctx.Err() != nil && err != nil {
					break // cut short by the end of the run
				}
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				ok++
				lat = append(lat, d)
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.latencies = append(res.latencies, lat...)
			if res.firstErr == "" {
				res.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	slices.Sort(res.latencies)

	after, err := b.appliedIndex(leaderBase)
	if err != nil {
		return nil, err
	}
	res.applied = after - before
	return &res, nil
}

// post sends one write; a status other than 200 is an error.
func post(client *http.Client, url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// appliedIndex is the leader's applied index as it reports it.
func (b *bench) appliedIndex(leaderBase string) (int64, error) {
	st, err := b.api.clusterStatus(leaderBase)
	if err != nil {
		return 0, err
	}
	for _, m := range st.Managers {
		if m.State == "leader" {
			return int64(m.AppliedIndex), nil
		}
	}
	return 0, fmt.Errorf("cluster status at %s: no leader among %d managers", leaderBase, len(st.Managers))
}
