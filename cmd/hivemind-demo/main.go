// Command hivemind-demo runs Hivemind end to end on this machine and says
// what happened: a private containerd per worker, a local registry, three
// managers and two workers on loopback addresses, three replicas of a web
// app, then a rolling update to a new version during which the Raft leader
// is killed with SIGKILL. Every figure it prints is one it measured.
//
// It stops everything it started, containers included, at the end, on
// Ctrl-C and on failure (exiting non-zero with the reason).
//
//	go run ./cmd/hivemind-demo --hivemind bin/hivemind
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

const (
	appName  = "web"
	replicas = 3
)

func main() {
	bin := flag.String("hivemind", "bin/hivemind", "path to the hivemind binary")
	verbose := flag.Bool("v", false, "also print the harness's own progress lines")
	keep := flag.Bool("keep", false, "keep the run directory (logs, data dirs) after stopping")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "hivemind-demo: must run as root (containerd runs the containers)")
		os.Exit(1)
	}
	d := &demo{start: time.Now(), out: os.Stdout}
	var harness io.Writer = io.Discard
	if *verbose {
		harness = &indent{w: os.Stdout}
	}
	c, err := cluster.New(cluster.Config{
		Binary:   *bin,
		Managers: 3,
		Workers:  2,
		Log:      harness,
		KeepDir:  *keep,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hivemind-demo:", err)
		os.Exit(1)
	}
	d.c = c

	// Ctrl-C or SIGTERM: stop everything, then exit non-zero.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		d.say("received %s: stopping everything the demo started", sig)
		d.stop()
		os.Exit(130)
	}()

	err = d.run()
	if err != nil {
		d.say("FAILED: %v", err)
		fmt.Fprintf(os.Stderr, "\nlast lines of each log:\n%s\n", c.Tails(15))
	}
	d.stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hivemind-demo: failed:", firstLine(err))
		os.Exit(1)
	}
}

// demo holds the cluster and prints steps with the time since the start.
type demo struct {
	c     *cluster.Cluster
	start time.Time
	out   io.Writer

	mu       sync.Mutex
	stopOnce sync.Once
}

func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%6.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) stop() {
	d.stopOnce.Do(func() {
		t0 := time.Now()
		d.say("stopping: removing the app, stopping workers, managers and containerds, removing containers and the run directory")
		if err := d.c.Stop(); err != nil {
			d.say("stop reported: %v", err)
		}
		left, err := d.c.Leftovers()
		switch {
		case err != nil:
			d.say("could not check what is left: %v", err)
		case len(left) > 0:
			d.say("WARNING: left behind: %s", strings.Join(left, "; "))
		default:
			d.say("everything stopped in %s; checked: no process, container or mount of the demo is left", round(time.Since(t0)))
		}
	})
}

func (d *demo) run() error {
	c := d.c

	// 1. The cluster.
	d.say("starting a registry with web:v1 and web:v2, a private containerd per worker, managers m1-m3 on 127.0.0.1-3 and workers w1-w2 on 127.0.0.11-12 (run dir %s)", c.Dir)
	t0 := time.Now()
	if err := c.Start(); err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	leader, err := c.Leader()
	if err != nil {
		return err
	}
	nodes, err := c.Nodes()
	if err != nil {
		return err
	}
	d.say("cluster up in %s: %s is the Raft leader; node ls shows %s", round(time.Since(t0)), leader, describeNodes(nodes))

	// 2. Three replicas of v1.
	app := cluster.WebApp{Name: appName, Image: c.Image("v1"), Replicas: replicas,
		MinHealthyTime: "2s", DrainTimeout: "2s"}
	d.say("deploying %s with %d replicas of %s (health check GET /healthz every 500ms, min_healthy_time 2s)", appName, replicas, app.Image)
	t0 = time.Now()
	if _, err := c.Deploy(app.YAML()); err != nil {
		return err
	}
	st, err := d.waitSettled(1, 90*time.Second)
	if err != nil {
		return err
	}
	d.say("all %d replicas running and healthy %s after app deploy", replicas, round(time.Since(t0)))
	if err := d.checkEach(st, "v1"); err != nil {
		return err
	}

	// 3. Roll to v2, killing the leader when the first new task is healthy.
	events := newEvents(d)
	events.quiet(st)
	probe := startProbe(c)
	app.Image = c.Image("v2")
	d.say("deploying %s (a rolling update: batch_size 1) and sending requests to every task the cluster lists as healthy, about every 50ms", app.Image)
	deployAt := time.Now()
	if _, err := c.Deploy(app.YAML()); err != nil {
		return err
	}
	before, err := d.firstHealthyV2(events)
	if err != nil {
		return err
	}
	leader, err = c.Leader()
	if err != nil {
		return err
	}
	d.say("first v2 task %s is healthy: killing the leader %s with SIGKILL", strings.Join(before, ", "), leader)
	killAt := time.Now()
	if err := c.KillManager(leader); err != nil {
		return err
	}
	newLeader, took, err := d.waitNewLeader(leader, 30*time.Second)
	if err != nil {
		return err
	}
	d.say("%s was elected leader %d ms after the kill (seen by polling cluster status on the survivors)", newLeader, took.Milliseconds())

	st, err = d.follow(events, 90*time.Second)
	if err != nil {
		return err
	}
	rollout := time.Since(deployAt)
	sinceKill := time.Since(killAt)
	if moved := events.firstPlacedAfter(killAt); !moved.IsZero() {
		d.say("the rollout moved again (next v2 task placed) %s after the kill; without a kill, the next batch is due min_healthy_time (2s) after the previous one is healthy",
			round(moved.Sub(killAt)))
	}
	sent, failed := probe.finish()
	d.say("rollout finished %s after app deploy (%s after the kill); deployment %s is %s",
		round(rollout), round(sinceKill), st.Deployment.ID, st.Deployment.Status)
	if err := d.checkEach(st, "v2"); err != nil {
		return err
	}

	// 4. What it adds up to.
	kept := true
	live := map[string]bool{}
	for _, t := range st.Live() {
		live[t.ID] = true
	}
	for _, id := range before {
		kept = kept && live[id]
	}
	d.say("summary:")
	d.say("  - leader %s killed with SIGKILL mid-rollout; %s took over after %d ms", leader, newLeader, took.Milliseconds())
	d.say("  - rolling update of %d replicas done in %s, deployment %s", replicas, round(rollout), st.Deployment.Status)
	d.say("  - every task now answers VERSION=v2: %s", strings.Join(ids(st.Live()), ", "))
	d.say("  - %d distinct v2 tasks were ever placed for %d replicas (a task placed twice would show more)", len(events.seen[2]), replicas)
	if kept {
		d.say("  - the v2 task healthy before the kill (%s) is still the same task: not restarted", strings.Join(before, ", "))
	} else {
		d.say("  - WARNING: a v2 task healthy before the kill (%s) was replaced", strings.Join(before, ", "))
	}
	switch {
	case sent == 0:
		d.say("  - no request was sent to the tasks during the rollout")
	case len(failed) == 0:
		d.say("  - %d requests sent straight to the tasks listed healthy during the rollout; none failed", sent)
	default:
		d.say("  - %d requests sent straight to the tasks listed healthy during the rollout; %d failed:", sent, len(failed))
		byTask := map[string][]failure{}
		var order []string
		for _, f := range failed {
			if byTask[f.task] == nil {
				order = append(order, f.task)
			}
			byTask[f.task] = append(byTask[f.task], f)
		}
		for _, id := range order {
			fs := byTask[id]
			d.say("      %d to task %s (states seen: %s), first: %s", len(fs), id,
				strings.Join(events.states[id], " -> "), fs[0].err)
		}
		for _, id := range order {
			if !slices.Contains(events.states[id], "draining") &&
				!slices.Contains(events.states[id], "draining, healthy") {
				d.say("    task %s was never seen draining before it stopped, though the spec sets drain_timeout: 2s", id)
			}
		}
		d.say("    (this demo refreshes its list of healthy tasks from app status every 200ms and does not go through an ingress proxy)")
	}
	if len(events.seen[2]) != replicas || !kept {
		return fmt.Errorf("the rollout did not keep its promises (see above)")
	}
	return nil
}

// waitSettled waits until the app runs only healthy tasks of version.
func (d *demo) waitSettled(version int64, timeout time.Duration) (*cluster.AppStatus, error) {
	var st *cluster.AppStatus
	err := cluster.WaitFor(timeout, func() error {
		s, err := d.c.AppStatus(appName)
		if err != nil {
			return err
		}
		st = s
		return s.Settled(version)
	})
	return st, err
}

// checkEach GETs / from every task and prints what it answers.
func (d *demo) checkEach(st *cluster.AppStatus, image string) error {
	for _, t := range st.Live() {
		addr := t.Addresses["http"]
		body, err := cluster.Get(addr, "/")
		if err != nil {
			return fmt.Errorf("task %s: %w", t.ID, err)
		}
		want := fmt.Sprintf("VERSION=%s TASK=%s", image, t.ID)
		if body != want {
			return fmt.Errorf("task %s at %s answers %q, want %q", t.ID, addr, body, want)
		}
		d.say("  task %s on %s at %s answers %q", t.ID, t.Node, addr, body)
	}
	return nil
}

// firstHealthyV2 follows the rollout until a v2 task is healthy and
// returns the healthy v2 task IDs.
func (d *demo) firstHealthyV2(ev *events) ([]string, error) {
	var healthy []string
	err := cluster.WaitFor(60*time.Second, func() error {
		st, err := d.c.AppStatus(appName)
		if err != nil {
			return err
		}
		ev.update(st)
		healthy = healthy[:0]
		for _, t := range st.Live() {
			if t.Version == 2 && t.Healthy && t.State == "running" {
				healthy = append(healthy, t.ID)
			}
		}
		if len(healthy) == 0 {
			return fmt.Errorf("no v2 task healthy yet")
		}
		return nil
	})
	sort.Strings(healthy)
	return healthy, err
}

// waitNewLeader polls the surviving managers every 50ms until one names a
// leader other than old.
func (d *demo) waitNewLeader(old string, timeout time.Duration) (string, time.Duration, error) {
	t0 := time.Now()
	for time.Since(t0) < timeout {
		for _, m := range d.c.Managers() {
			if m.Name == old || !d.c.Running(m.Name) {
				continue
			}
			var st cluster.ClusterStatus
			if err := d.c.JSONAt(m.Name, &st, "cluster", "status"); err != nil {
				continue
			}
			if st.Leader != "" && st.Leader != old {
				return st.Leader, time.Since(t0), nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", 0, fmt.Errorf("no new leader %s after killing %s", timeout, old)
}

// follow prints the rollout's events until the app is settled on v2.
func (d *demo) follow(ev *events, timeout time.Duration) (*cluster.AppStatus, error) {
	var st *cluster.AppStatus
	err := cluster.WaitFor(timeout, func() error {
		s, err := d.c.AppStatus(appName)
		if err != nil {
			return err
		}
		ev.update(s)
		st = s
		return s.Settled(2)
	})
	return st, err
}

// events turns successive app statuses into lines about task changes.
type events struct {
	d      *demo
	silent bool
	last   map[string]cluster.Task
	seen   map[int64]map[string]bool
	states map[string][]string  // task ID -> the states seen, in order
	placed map[string]time.Time // task ID -> when it was first seen
}

func newEvents(d *demo) *events {
	return &events{d: d, last: map[string]cluster.Task{},
		seen: map[int64]map[string]bool{}, states: map[string][]string{},
		placed: map[string]time.Time{}}
}

// quiet records st as the starting point without printing it.
func (e *events) quiet(st *cluster.AppStatus) {
	e.silent = true
	e.update(st)
	e.silent = false
}

func (e *events) say(format string, args ...any) {
	if !e.silent {
		e.d.say(format, args...)
	}
}

func (e *events) update(st *cluster.AppStatus) {
	now := map[string]cluster.Task{}
	for _, t := range st.Tasks {
		now[t.ID] = t
		v := int64(t.Version)
		if e.seen[v] == nil {
			e.seen[v] = map[string]bool{}
		}
		e.seen[v][t.ID] = true
		old, ok := e.last[t.ID]
		switch {
		case !ok:
			e.placed[t.ID] = time.Now()
			e.say("  task %s (v%d) placed on %s: %s%s", t.ID, t.Version, t.Node, t.State, healthWord(t))
		case old.State != t.State || old.Healthy != t.Healthy:
			e.say("  task %s (v%d) on %s: %s%s", t.ID, t.Version, t.Node, t.State, healthWord(t))
		default:
			continue
		}
		e.states[t.ID] = append(e.states[t.ID], t.State+healthWord(t))
	}
	for id, t := range e.last {
		if _, ok := now[id]; !ok {
			e.say("  task %s (v%d) on %s is gone from app status", id, t.Version, t.Node)
			e.states[id] = append(e.states[id], "gone")
		}
	}
	e.last = now
}

// firstPlacedAfter is when the first task first seen after t was seen;
// zero if none.
func (e *events) firstPlacedAfter(t time.Time) time.Time {
	var first time.Time
	for _, at := range e.placed {
		if at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

func healthWord(t cluster.Task) string {
	if t.Healthy {
		return ", healthy"
	}
	return ""
}

// probe sends GET / to each task the cluster lists as running and
// healthy, refreshing the list from app status.
type probe struct {
	stop chan struct{}
	done chan struct{}

	sent   int
	failed []failure
}

// failure is one request that got no good answer.
type failure struct{ task, err string }

func startProbe(c *cluster.Cluster) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var targets []cluster.Task
		refreshed := time.Time{}
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if time.Since(refreshed) > 200*time.Millisecond {
				if st, err := c.AppStatus(appName); err == nil {
					targets = targets[:0]
					for _, t := range st.Live() {
						if t.Healthy && t.State == "running" {
							targets = append(targets, t)
						}
					}
				}
				refreshed = time.Now()
			}
			for _, t := range targets {
				p.sent++
				if _, err := cluster.Get(t.Addresses["http"], "/"); err != nil {
					p.failed = append(p.failed, failure{t.ID, err.Error()})
				}
			}
		}
	}()
	return p
}

func (p *probe) finish() (int, []failure) {
	close(p.stop)
	<-p.done
	return p.sent, p.failed
}

func describeNodes(nodes []cluster.Node) string {
	var parts []string
	for _, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", n.Name, n.Role, n.Status))
	}
	return strings.Join(parts, ", ")
}

func ids(tasks []cluster.Task) []string {
	var out []string
	for _, t := range tasks {
		out = append(out, t.ID)
	}
	return out
}

func round(d time.Duration) time.Duration {
	return d.Round(100 * time.Millisecond)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// indent prefixes each line written with spaces, to set the harness's
// lines apart from the demo's steps.
type indent struct{ w io.Writer }

func (i *indent) Write(b []byte) (int, error) {
	_, err := fmt.Fprintf(i.w, "           | %s", b)
	return len(b), err
}
