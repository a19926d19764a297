// Command hivemind-demo runs Hivemind end to end on this machine and says
// what happened: a private containerd per worker, a local registry, three
// managers and two workers on loopback addresses, three replicas of a web
// app published on an ingress port of every worker, then a rolling update
// to a new version under steady load through both workers' ingress, during
// which the Raft leader is killed with SIGKILL. It counts every request
// that failed and which version answered each, shows the draining and
// stopping of the old tasks as it sees them, and asks a worker's DNS for
// the app. Every figure it prints is one it measured.
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
	"net"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

const (
	appName  = "web"
	replicas = 3
)

func main() {
	bin := flag.String("hivemind", "bin/hivemind", "path to the hivemind binary")
	verbose := flag.Bool("v", false, "also print the harness's own progress lines")
	keep := flag.Bool("keep", false, "keep the run directory (logs, data dirs) after stopping")
	subnet := flag.Int("subnet", 0, "run on 127.0.SUBNET.x, beside another cluster on 127.0.0.x")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "hivemind-demo: must run as root (containerd runs the containers)")
		os.Exit(1)
	}
	d := &demo{start: time.Now(), out: os.Stdout, subnet: *subnet}
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
		Subnet:   *subnet,
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
	c      *cluster.Cluster
	start  time.Time
	out    io.Writer
	subnet int

	mu       sync.Mutex
	stopOnce sync.Once
	stopping atomic.Bool // no more timeline lines: the demo is stopping
}

func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%6.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// at is t as seconds since the demo started, the time of the timeline.
func (d *demo) at(t time.Time) string {
	if t.IsZero() {
		return "(unknown)"
	}
	return fmt.Sprintf("%.1fs", t.Sub(d.start).Seconds())
}

func (d *demo) stop() {
	d.stopping.Store(true)
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
	d.say("starting a registry with web:v1 and web:v2, a private containerd per worker, managers m1-m3 on 127.0.%[1]d.1-3 and workers w1-w2 on 127.0.%[1]d.11-12 (run dir %[2]s)", d.subnet, c.Dir)
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

	// 2. Three replicas of v1 behind the ingress of every worker.
	var workerIPs []string
	for _, w := range c.Workers() {
		workerIPs = append(workerIPs, w.IP)
	}
	port, err := freePort(workerIPs, 8080, 8099)
	if err != nil {
		return err
	}
	app := cluster.WebApp{Name: appName, Image: c.Image("v1"), Replicas: replicas,
		MinHealthyTime: "2s", DrainTimeout: "2s", Ingress: port}
	d.say("deploying %s: %d replicas of %s, its http port published as ingress %d on every worker (health check GET /healthz every 500ms, min_healthy_time 2s, drain_timeout 2s, batch_size 1)",
		appName, replicas, app.Image, port)
	w := startWatcher(d, appName)
	defer w.finish()
	t0 = time.Now()
	if _, err := c.Deploy(app.YAML()); err != nil {
		return err
	}
	st, err := w.waitFor(90*time.Second, func(st *pb.AppStatusResponse) error { return settled(st, 1, replicas) })
	if err != nil {
		return fmt.Errorf("v1 never settled: %w", err)
	}
	d.say("all %d replicas running and healthy %s after app deploy", replicas, round(time.Since(t0)))
	if err := d.checkEach(st, "v1"); err != nil {
		return err
	}
	var targets []string
	for _, ip := range workerIPs {
		target := fmt.Sprintf("%s:%d", ip, port)
		var body string
		err := cluster.WaitFor(15*time.Second, func() error {
			b, err := cluster.Get(target, "/")
			body = b
			if err == nil && !strings.HasPrefix(b, "VERSION=v1 ") {
				err = fmt.Errorf("ingress %s answers %q, want v1", target, b)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("ingress: %w", err)
		}
		d.say("  ingress %s answers %q", target, body)
		targets = append(targets, target)
	}
	if err := d.showDNS(workerIPs, st, "v1"); err != nil {
		return err
	}

	// 3. Roll to v2 under load, killing the leader when the first new task
	// is healthy.
	const interval = 50 * time.Millisecond
	rate := len(targets) * 2 * int(time.Second/interval)
	d.say("sending %d requests/s of GET / through the ingress of both workers (%s), half over a keep-alive connection, half over a new connection each; a request fails on a connection error, a reset, a timeout (3s) or a non-200",
		rate, strings.Join(targets, " and "))
	l := startLoad(targets, interval, func(g string) {
		if !d.stopping.Load() {
			d.say("  REQUEST FAILED (first of its kind): %s", g)
		}
	})
	var stopped bool
	defer func() {
		if !stopped {
			l.finish()
		}
	}()
	time.Sleep(time.Second) // a second of load on v1 alone, as a baseline

	w.loud()
	app.Image = c.Image("v2")
	d.say("deploying %s: a rolling update, one task at a time; task changes are printed as they are seen (app status polled every 50ms)", app.Image)
	deployAt := time.Now()
	if _, err := c.Deploy(app.YAML()); err != nil {
		return err
	}
	var before []string
	_, err = w.waitFor(60*time.Second, func(st *pb.AppStatusResponse) error {
		before = before[:0]
		for _, t := range live(st) {
			if t.GetVersion() == 2 && t.GetHealthy() && t.GetState() == pb.TaskRunning {
				before = append(before, t.GetId())
			}
		}
		if len(before) == 0 {
			return fmt.Errorf("no v2 task healthy yet")
		}
		return nil
	})
	if err != nil {
		return err
	}
	leader, err = c.Leader()
	if err != nil {
		return err
	}
	d.say("first v2 task %s is healthy: killing the leader %s with SIGKILL", strings.Join(before, ", "), leader)
	if err := c.KillManager(leader); err != nil {
		return err
	}
	killAt := time.Now()
	newLeader, took, err := d.waitNewLeader(leader, 30*time.Second)
	if err != nil {
		return err
	}
	d.say("%s is the new leader, %d ms after %s exited (polling the survivors' cluster status every 25ms)", newLeader, took.Milliseconds(), leader)

	st, err = w.waitFor(90*time.Second, func(st *pb.AppStatusResponse) error {
		dep := st.GetDeployment()
		if dep == nil || dep.GetToVersion() != 2 || dep.GetStatus() == "running" {
			return fmt.Errorf("deployment to v2 still running")
		}
		return nil
	})
	if err != nil {
		return err
	}
	rollout := time.Since(deployAt)
	dep := st.GetDeployment()
	if dep.GetStatus() != "successful" {
		return fmt.Errorf("the rollout did not complete: deployment %s is %s: %s", dep.GetId(), dep.GetStatus(), dep.GetDescription())
	}
	st, err = w.waitFor(30*time.Second, func(st *pb.AppStatusResponse) error { return settled(st, 2, replicas) })
	if err != nil {
		return fmt.Errorf("deployment successful but v2 never settled: %w", err)
	}
	settledIn := time.Since(deployAt)
	time.Sleep(time.Second) // a last second of load on v2 alone
	results := l.finish()
	stopped = true
	loadEnd := time.Now()
	d.say("load stopped")
	if err := d.checkEach(st, "v2"); err != nil {
		return err
	}
	if err := d.showDNS(workerIPs, st, "v2"); err != nil {
		return err
	}

	// 4. What it adds up to.
	_, seen := w.snapshot()
	return d.summary(summaryIn{
		leader: leader, newLeader: newLeader, took: took, killAt: killAt,
		rollout: rollout, settledIn: settledIn, st: st, before: before,
		seen: seen, results: results, loadEnd: loadEnd, port: port,
	})
}

type summaryIn struct {
	leader, newLeader string
	took              time.Duration
	killAt, loadEnd   time.Time
	rollout           time.Duration
	settledIn         time.Duration
	st                *pb.AppStatusResponse
	before            []string
	seen              map[string]taskSeen
	results           []result
	port              int
}

func (d *demo) summary(in summaryIn) error {
	var problems []string
	d.say("summary:")
	d.say("  - leader %s killed with SIGKILL mid-rollout; %s was elected %d ms later", in.leader, in.newLeader, in.took.Milliseconds())

	var moved time.Time
	var v2 []string
	for _, s := range in.seen {
		if s.version == 2 {
			v2 = append(v2, s.id)
		}
		if s.firstSeen.After(in.killAt) && (moved.IsZero() || s.firstSeen.Before(moved)) {
			moved = s.firstSeen
		}
	}
	if !moved.IsZero() {
		d.say("  - the rollout moved on (next v2 task placed) %s after the kill; without a kill the next task is due min_healthy_time (2s) after the previous one is healthy",
			round(moved.Sub(in.killAt)))
	}
	d.say("  - rolling update of %d replicas: deployment %s %s after app deploy; the last v1 task was gone %s after app deploy",
		replicas, in.st.GetDeployment().GetStatus(), round(in.rollout), round(in.settledIn))
	d.say("  - every task now answers VERSION=v2: %s", strings.Join(taskIDs(live(in.st)), ", "))
	d.say("  - %d distinct v2 tasks were ever placed for %d replicas (a task placed twice would show more)", len(v2), replicas)
	if len(v2) != replicas {
		problems = append(problems, fmt.Sprintf("%d v2 tasks placed for %d replicas", len(v2), replicas))
	}
	liveIDs := map[string]bool{}
	for _, t := range live(in.st) {
		liveIDs[t.GetId()] = true
	}
	kept := true
	for _, id := range in.before {
		kept = kept && liveIDs[id]
	}
	if kept {
		d.say("  - the v2 task healthy before the kill (%s) is still the same task: not restarted", strings.Join(in.before, ", "))
	} else {
		d.say("  - a v2 task healthy before the kill (%s) was replaced", strings.Join(in.before, ", "))
		problems = append(problems, "a v2 task healthy before the kill was replaced")
	}

	// Old tasks: the order they went through.
	var v1 []taskSeen
	for _, s := range in.seen {
		if s.version == 1 {
			v1 = append(v1, s)
		}
	}
	sort.Slice(v1, func(i, j int) bool { return v1[i].stopAt.Before(v1[j].stopAt) })
	for _, s := range v1 {
		d.say("  - v1 task %s on %s: app status showed %s", s.id, s.node, strings.Join(s.states, " -> "))
		var steps []string
		for _, l := range workerLog(d.c, s.node, s.id) {
			if l.at.Before(s.stopAt) {
				continue
			}
			steps = append(steps, fmt.Sprintf("%s at %s", l.what, d.at(l.at)))
		}
		if len(steps) == 0 {
			steps = []string{"(nothing found)"}
		}
		d.say("    told to stop at %s, out of rotation on every worker at %s (leader's times); %s logged: %s",
			d.at(s.stopAt), d.at(s.outAt), s.node, strings.Join(steps, ", "))
	}

	// Traffic.
	n := len(in.results)
	byVersion := map[string]int{}
	var failed int
	var lastV1 *result
	afterOut := 0
	for i := range in.results {
		r := &in.results[i]
		if r.err != "" {
			failed++
			continue
		}
		byVersion[r.version]++
		if r.version == "v1" {
			if lastV1 == nil || r.start.After(lastV1.start) {
				lastV1 = r
			}
			if s, ok := in.seen[r.task]; ok && !s.outAt.IsZero() && r.start.After(s.outAt) {
				afterOut++
			}
		}
	}
	var span time.Duration
	if n > 0 {
		span = in.results[n-1].start.Sub(in.results[0].start)
	}
	d.say("  - %d requests through the ingress of both workers over %s (%.0f/s): %d answered by v1, %d by v2, %d FAILED",
		n, round(span), float64(n)/max(span.Seconds(), 1), byVersion["v1"], byVersion["v2"], failed)
	if failed > 0 {
		for _, g := range groupFailures(in.results) {
			d.say("      %d x %s (from %s to %s)", g.n, g.key, d.at(g.first), d.at(g.last))
		}
		problems = append(problems, fmt.Sprintf("%d of %d requests failed", failed, n))
	}
	var lastOut time.Time
	var lastOutTask string
	missing := 0
	for _, s := range v1 {
		if s.outAt.IsZero() {
			missing++
			continue
		}
		if s.outAt.After(lastOut) {
			lastOut, lastOutTask = s.outAt, s.id
		}
	}
	switch {
	case lastV1 == nil:
		d.say("  - no request was answered by v1")
	case lastOut.IsZero():
		d.say("  - the last v1 answer was to a request sent at %s; no v1 task was seen marked out of rotation", d.at(lastV1.start))
	default:
		d.say("  - the last v1 answer (task %s) was to a request sent at %s, %s that task was told to stop and %s the last v1 task (%s) was out of rotation at %s (the leader's time, once every ingress confirmed)",
			lastV1.task, d.at(lastV1.start), beforeAfter(lastV1.start, in.seen[lastV1.task].stopAt),
			beforeAfter(lastV1.start, lastOut), lastOutTask, d.at(lastOut))
	}
	if missing > 0 {
		d.say("    (%d v1 tasks were gone before a poll saw them marked out of rotation)", missing)
	}
	if afterOut > 0 {
		d.say("  - %d requests sent after their v1 task was out of rotation were still answered by it", afterOut)
		problems = append(problems, fmt.Sprintf("%d answers from tasks already out of rotation", afterOut))
	} else {
		d.say("  - no request sent after its v1 task was out of rotation was answered by that task")
	}

	if len(problems) > 0 {
		return fmt.Errorf("the rollout completed, but: %s", strings.Join(problems, "; "))
	}
	d.say("  => the rollout completed with the leader killed halfway, and no request through the ingress failed")
	return nil
}

// freePort is the first port in [from, to] free on every ip.
func freePort(ips []string, from, to int) (int, error) {
	for p := from; p <= to; p++ {
		ok := true
		for _, ip := range ips {
			ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, p))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no port in %d-%d free on %s for the ingress", from, to, strings.Join(ips, ", "))
}

// showDNS asks every worker's DNS for APP.hivemind and says whether it
// lists exactly the live tasks of st.
func (d *demo) showDNS(ips []string, st *pb.AppStatusResponse, version string) error {
	var want []string
	for _, t := range live(st) {
		want = append(want, t.GetId()+"@"+addr(t))
	}
	sort.Strings(want)
	for _, ip := range ips {
		server := fmt.Sprintf("%s:%d", ip, dnsPort)
		var ans dnsAnswer
		// The worker's DNS follows the endpoint set a moment after app
		// status does.
		err := cluster.WaitFor(5*time.Second, func() error {
			a, err := lookup(server, appName)
			ans = a
			if err == nil && !slices.Equal(a.srv, want) {
				err = fmt.Errorf("SRV %v, want %v", a.srv, want)
			}
			return err
		})
		verdict := fmt.Sprintf("the %d %s tasks", len(want), version)
		if err != nil {
			verdict = "NOT the live tasks: " + err.Error()
		}
		d.say("  DNS %s.hivemind at %s: %s: %s", appName, server, ans, verdict)
	}
	return nil
}

func taskIDs(ts []*pb.Task) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.GetId())
	}
	return out
}

// beforeAfter says "N ms before" or "N ms after": a against b.
func beforeAfter(a, b time.Time) string {
	if b.IsZero() {
		return "(time unknown)"
	}
	if d := a.Sub(b); d < 0 {
		return fmt.Sprintf("%d ms before", (-d).Milliseconds())
	} else {
		return fmt.Sprintf("%d ms after", d.Milliseconds())
	}
}

// checkEach GETs / from every live task directly and prints its answer.
func (d *demo) checkEach(st *pb.AppStatusResponse, image string) error {
	for _, t := range live(st) {
		body, err := cluster.Get(addr(t), "/")
		if err != nil {
			return fmt.Errorf("task %s: %w", t.GetId(), err)
		}
		want := fmt.Sprintf("VERSION=%s TASK=%s", image, t.GetId())
		if body != want {
			return fmt.Errorf("task %s at %s answers %q, want %q", t.GetId(), addr(t), body, want)
		}
		d.say("  task %s on %s at %s answers %q", t.GetId(), t.GetNode(), addr(t), body)
	}
	return nil
}

// waitNewLeader polls the surviving managers every 25ms until one names a
// leader other than old.
func (d *demo) waitNewLeader(old string, timeout time.Duration) (string, time.Duration, error) {
	t0 := time.Now()
	for time.Since(t0) < timeout {
		for _, m := range d.c.Managers() {
			if m.Name == old || !d.c.Running(m.Name) {
				continue
			}
			if l, err := leaderSeenBy(m); err == nil && l != "" && l != old {
				return l, time.Since(t0), nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return "", 0, fmt.Errorf("no new leader %s after killing %s", timeout, old)
}

func describeNodes(nodes []cluster.Node) string {
	var parts []string
	for _, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", n.Name, n.Role, n.Status))
	}
	return strings.Join(parts, ", ")
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
