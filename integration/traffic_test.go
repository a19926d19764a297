package integration

import (
	"flag"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// trafficSubnet is the loopback subnet of TestTraffic's cluster.
const trafficSubnet = 13

var keepTraffic = flag.Bool("traffic-keep", false,
	"keep the run directory (logs, data) of TestTraffic's cluster")

// Issue 3, proved under load: a cluster of its own (3 managers, 2
// workers), and per scenario an app with an ingress port of its own and a
// load generator sending GET / to the ingress of both workers, over
// keep-alive and over new connections, counting every failure and which
// version answered each request.
func TestTraffic(t *testing.T) {
	t.Parallel()
	c, err := cluster.Start(cluster.Config{
		Binary:   binary,
		Managers: 3,
		Workers:  2,
		Subnet:   trafficSubnet,
		Log:      harnessLog,
		KeepDir:  *keepTraffic,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
		if *keepTraffic {
			t.Logf("run directory kept: %s", c.Dir)
		}
	})
	onFailure(t, c)

	// In order: the drain leaves a worker empty, and the last one kills
	// every manager.
	t.Run("dns", func(t *testing.T) { testDNS(t, c) })
	t.Run("rolling-update", func(t *testing.T) { testRollingUnderLoad(t, c, false) })
	t.Run("rolling-update-leader-killed", func(t *testing.T) { testRollingUnderLoad(t, c, true) })
	t.Run("node-drain", func(t *testing.T) { testNodeDrainUnderLoad(t, c) })
	t.Run("bad-versions", func(t *testing.T) {
		t.Run("unhealthy-v3", func(t *testing.T) {
			t.Parallel()
			testBadVersionUnderLoad(t, c, "v3")
		})
		t.Run("crashing-v4", func(t *testing.T) {
			t.Parallel()
			testBadVersionUnderLoad(t, c, "v4")
		})
	})
	t.Run("static-stability", func(t *testing.T) { testStaticStability(t, c) })
}

// trafficApp is an app of 4 replicas of the web image at version whose
// http port is published at ingress, with a drain timeout of 2s.
func trafficApp(c *cluster.Cluster, name string, ingress int, version string) cluster.WebApp {
	return cluster.WebApp{
		Name: name, Image: c.Image(version), Replicas: 4,
		Ingress: ingress, DrainTimeout: "2s",
	}
}

// ingressTargets maps every worker to its ingress address at port.
func ingressTargets(c *cluster.Cluster, port int) map[string]string {
	out := map[string]string{}
	for _, w := range c.Workers() {
		out[w.Name] = net.JoinHostPort(w.IP, fmt.Sprint(port))
	}
	return out
}

// waitIngress waits until the ingress of every worker at port answers
// with version.
func waitIngress(t *testing.T, c *cluster.Cluster, port int, version string) {
	t.Helper()
	wait(t, 30*time.Second, fmt.Sprintf("the ingress of every worker at %d answers %s", port, version), func() error {
		for w, addr := range ingressTargets(c, port) {
			body, err := cluster.Get(addr, "/")
			if err != nil {
				return fmt.Errorf("ingress of %s: %w", w, err)
			}
			if v, _, _ := parseAnswer(body); v != version {
				return fmt.Errorf("ingress of %s answers %q, want VERSION=%s", w, body, version)
			}
		}
		return nil
	})
}

// startLoadOn starts the load on the ingress of every worker at port; it
// is stopped when t ends at the latest.
func startLoadOn(t *testing.T, c *cluster.Cluster, port int) *load {
	l := startLoad(ingressTargets(c, port))
	t.Cleanup(l.halt)
	return l
}

// runsImage reports whether task runs the web image of version.
func runsImage(task cluster.Task, version string) bool {
	return strings.HasSuffix(task.Image, "/web:"+version)
}

// inRotation lists the tasks of st of the web image version that may
// still be in the ingress rotation: any not yet stopping. A worker stops
// a task only once it is out of rotation.
func inRotation(st *cluster.AppStatus, version string) []string {
	var out []string
	for _, task := range st.Tasks {
		switch task.State {
		case "stopping", "stopped", "failed":
			continue
		}
		if runsImage(task, version) {
			out = append(out, fmt.Sprintf("%s (%s)", task.ID, task.State))
		}
	}
	return out
}

// waitRolledOut waits until app settled on version with a successful
// deployment, and returns the time by which no task of the web image old
// was in rotation any more (seen from here: a little after it happened).
func waitRolledOut(t *testing.T, c *cluster.Cluster, app string, version int64, old string,
	timeout time.Duration) time.Time {
	t.Helper()
	var outAt time.Time
	wait(t, timeout, fmt.Sprintf("%s rolled out to version %d", app, version), func() error {
		st, err := c.AppStatus(app)
		if err != nil {
			return err
		}
		left := inRotation(st, old)
		if outAt.IsZero() && len(left) == 0 {
			outAt = time.Now()
		}
		if err := st.Settled(version); err != nil {
			return err
		}
		if d := st.Deployment; d == nil || d.Status != "successful" {
			return fmt.Errorf("app %s: deployment %+v, want successful", app, d)
		}
		if len(left) > 0 {
			return fmt.Errorf("app %s: %s tasks %v may still be in rotation", app, old, left)
		}
		return nil
	})
	return outAt
}

// waitMoreLoad waits until n more requests were sent after since.
func waitMoreLoad(t *testing.T, l *load, since time.Time, n int) {
	t.Helper()
	wait(t, 30*time.Second, fmt.Sprintf("%d requests sent after %s", n, since.Format("15:04:05.000")), func() error {
		if got := l.sentSince(since); got < n {
			return fmt.Errorf("%d requests sent since", got)
		}
		return nil
	})
}

// A rolling update v1 -> v2 of 4 replicas under load: no request fails,
// and once the last v1 task has left the rotation no request is answered
// by v1. With killLeader, the leader is killed (kill -9) when the first
// v2 task is healthy: the rollout still completes, with no failed
// request.
func testRollingUnderLoad(t *testing.T, c *cluster.Cluster, killLeader bool) {
	name, port := "tr-roll", 18101
	if killLeader {
		name, port = "tr-kill", 18102
	}
	app := trafficApp(c, name, port, "v1")
	deployApp(t, c, app)
	waitSettled(t, c, app.Name, 1, 60*time.Second)
	waitIngress(t, c, port, "v1")

	l := startLoadOn(t, c, port)
	app.Image = c.Image("v2")
	deploy(t, c, app.YAML())

	killed := ""
	if killLeader {
		healthy := firstHealthy(t, c, app.Name, 2)
		leader, err := c.Leader()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.KillManager(leader); err != nil {
			t.Fatal(err)
		}
		killed = leader
		t.Cleanup(func() {
			if !c.Running(leader) {
				if err := c.Restart(leader); err != nil {
					t.Error(err)
				}
			}
		})
		newLeader, err := c.WaitLeader(30 * time.Second)
		if err != nil {
			t.Fatalf("no new leader after killing %s: %v", leader, err)
		}
		t.Logf("killed leader %s (kill -9) with v2 tasks %v healthy; %s leads now", leader, healthy, newLeader)
	}

	outAt := waitRolledOut(t, c, app.Name, 2, "v1", 90*time.Second)
	waitMoreLoad(t, l, outAt, 100)
	rep := l.finish(t)
	rep.check(t, "the rolling update v1 -> v2")
	if late := rep.answeredBy("v1", outAt); len(late) > 0 {
		t.Errorf("%d requests sent after the last v1 task left the rotation (%s) were answered by v1:\n%s",
			len(late), outAt.Format("15:04:05.000"), describeResults(late, 10))
	}
	if rep.byVersion["v1"] == 0 || rep.byVersion["v2"] == 0 {
		t.Errorf("answers by version %v: want both v1 and v2 to have answered", rep.byVersion)
	}
	t.Logf("last v1 task out of rotation at %s; %d requests sent after it",
		outAt.Format("15:04:05.000"), len(rep.answeredBy("v2", outAt)))
	confirmedRotation(t, c, app.Name)

	if killed != "" {
		if err := c.Restart(killed); err != nil {
			t.Fatal(err)
		}
		wait(t, 60*time.Second, killed+" rejoined and sees "+app.Name+" at version 2", func() error {
			var st cluster.AppStatus
			if err := c.JSONAt(killed, &st, "app", "status", app.Name); err != nil {
				return err
			}
			if st.Version != 2 {
				return fmt.Errorf("%s: app %s at version %d, want 2", killed, app.Name, st.Version)
			}
			var cs cluster.ClusterStatus
			if err := c.JSONAt(killed, &cs, "cluster", "status"); err != nil {
				return err
			}
			if cs.Leader == "" {
				return fmt.Errorf("%s knows no leader", killed)
			}
			return nil
		})
	}
}

// confirmedRotation fails t if a manager took a task of app out of
// rotation without every live worker's confirmation (after
// RotationBound): then the ingress may still have routed to it.
func confirmedRotation(t *testing.T, c *cluster.Cluster, app string) {
	t.Helper()
	for _, m := range c.Managers() {
		lines, err := c.Grep(m.Name, "without every worker's confirmation")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.Contains(l, " app="+app+" ") {
				t.Errorf("%s: %s", m.Name, l)
			}
		}
	}
}

// liveByNode maps each node to the IDs of the live tasks of st on it.
func liveByNode(st *cluster.AppStatus) map[string][]string {
	out := map[string][]string{}
	for _, task := range st.Live() {
		out[task.Node] = append(out[task.Node], task.ID)
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out
}

// `node drain` of a worker that holds half the tasks, under load: no
// request fails and the worker ends with no task; `node activate` then
// moves nothing back.
func testNodeDrainUnderLoad(t *testing.T, c *cluster.Cluster) {
	app := trafficApp(c, "tr-drain", 18103, "v1")
	deployApp(t, c, app)
	st := waitSettled(t, c, app.Name, 1, 60*time.Second)
	waitIngress(t, c, app.Ingress, "v1")

	byNode := liveByNode(st)
	victim := ""
	for _, w := range c.Workers() {
		if len(byNode[w.Name]) == app.Replicas/2 {
			victim = w.Name
			break
		}
	}
	if victim == "" {
		t.Fatalf("no worker holds half of the %d tasks: %v", app.Replicas, byNode)
	}
	t.Cleanup(func() {
		if _, err := c.CLI("node", "activate", victim); err != nil {
			t.Errorf("cleanup: node activate %s: %v", victim, err)
		}
	})

	l := startLoadOn(t, c, app.Ingress)
	if _, err := c.CLI("node", "drain", victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodeStatus(victim, "draining", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var after *cluster.AppStatus
	wait(t, 90*time.Second, fmt.Sprintf("%s drained and %s settled elsewhere", victim, app.Name), func() error {
		s, err := c.AppStatus(app.Name)
		if err != nil {
			return err
		}
		if on := liveByNode(s)[victim]; len(on) > 0 {
			return fmt.Errorf("%s still holds tasks %v", victim, on)
		}
		after = s
		return s.Settled(1)
	})
	drained := time.Now()
	t.Logf("%s drained: tasks %v before, %v after", victim, byNode, liveByNode(after))

	if _, err := c.CLI("node", "activate", victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodeStatus(victim, "ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Nothing moves back: the same tasks on the same nodes, sampled for
	// 3s after the activation.
	want := fmt.Sprint(liveByNode(after))
	tick := time.NewTicker(cluster.PollInterval)
	defer tick.Stop()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-tick.C {
		s, err := c.AppStatus(app.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(liveByNode(s)); got != want {
			t.Fatalf("tasks moved after node activate %s: %s, were %s", victim, got, want)
		}
	}

	waitMoreLoad(t, l, drained, 100)
	rep := l.finish(t)
	rep.check(t, "node drain "+victim)
	confirmedRotation(t, c, app.Name)
}

// A bad version under load. v3 never becomes healthy: no request is
// answered by it. v4 passes its first check and crashes 4s after it
// started, before min_healthy_time (6s) counts it healthy. Either way the
// deployment ends rolled back with every task on v2, and no request
// fails.
func testBadVersionUnderLoad(t *testing.T, c *cluster.Cluster, bad string) {
	app := trafficApp(c, "tr-"+bad, 18104, "v2")
	app.AutoRollback = true
	switch bad {
	case "v3":
		app.HealthyDeadline = "6s"
	case "v4":
		app.Ingress = 18105
		app.MinHealthyTime = "6s"
		app.HealthyDeadline = "20s"
	}
	deployApp(t, c, app)
	waitSettled(t, c, app.Name, 1, 60*time.Second)
	waitIngress(t, c, app.Ingress, "v2")

	l := startLoadOn(t, c, app.Ingress)
	app.Image = c.Image(bad)
	deploy(t, c, app.YAML())

	// Watch the bad task: v3's runs and is never healthy, v4's is
	// healthy and then fails.
	var started, healthy, failed bool
	var d *cluster.Deployment
	wait(t, 90*time.Second, fmt.Sprintf("deployment of %s to %s finished", app.Name, bad), func() error {
		st, err := c.AppStatus(app.Name)
		if err != nil {
			return err
		}
		for _, task := range st.Tasks {
			if !runsImage(task, bad) {
				continue
			}
			started = started || task.State == "running"
			healthy = healthy || task.Healthy
			failed = failed || task.State == "failed"
		}
		if st.Deployment == nil || st.Deployment.Status == "running" {
			return fmt.Errorf("deployment %+v still running", st.Deployment)
		}
		d = st.Deployment
		return nil
	})
	t.Logf("deployment %s: %s (%s); %s task seen running=%t healthy=%t failed=%t",
		d.ID, d.Status, d.Description, bad, started, healthy, failed)
	if d.Status != "rolled_back" {
		t.Errorf("deployment %s is %q (%s), want rolled_back", d.ID, d.Status, d.Description)
	}
	switch bad {
	case "v3":
		if !started || healthy {
			t.Errorf("v3 task seen running=%t healthy=%t: want a task that starts and is never healthy",
				started, healthy)
		}
	case "v4":
		if !healthy {
			t.Errorf("no v4 task was seen healthy: the scenario wants one that passes its check, then crashes")
		}
	}

	wait(t, 60*time.Second, app.Name+" back on v2", func() error {
		st, err := c.AppStatus(app.Name)
		if err != nil {
			return err
		}
		if err := st.Settled(int64(st.Version)); err != nil {
			return err
		}
		for _, task := range st.Live() {
			if !runsImage(task, "v2") {
				return fmt.Errorf("task %s runs %s, want web:v2", task.ID, task.Image)
			}
		}
		return nil
	})
	waitMoreLoad(t, l, time.Now(), 50)
	rep := l.finish(t)
	rep.check(t, "the deployment of "+bad+" and its rollback")
	if n := rep.byVersion[bad]; bad == "v3" && n > 0 {
		t.Errorf("%d requests were answered by v3, which never was healthy", n)
	}
}

// dnsAsk sends one question to a worker's DNS server.
func dnsAsk(server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	cl := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := cl.Exchange(m, server)
	if err != nil {
		return nil, fmt.Errorf("dns %s %s at %s: %w", dns.TypeToString[qtype], name, server, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("dns %s %s at %s: %s", dns.TypeToString[qtype], name, server,
			dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// dnsView is what a worker's DNS says of an app: the A records of
// APP.hivemind and the addresses (target's A, SRV port) of its SRV
// records, each sorted.
func dnsView(server, app string) (ips, srv []string, err error) {
	name := app + ".hivemind."
	a, err := dnsAsk(server, name, dns.TypeA)
	if err != nil {
		return nil, nil, err
	}
	for _, rr := range a.Answer {
		if r, ok := rr.(*dns.A); ok {
			ips = append(ips, r.A.String())
		}
	}
	s, err := dnsAsk(server, name, dns.TypeSRV)
	if err != nil {
		return nil, nil, err
	}
	extra := map[string]string{}
	for _, rr := range s.Extra {
		if r, ok := rr.(*dns.A); ok {
			extra[strings.ToLower(r.Hdr.Name)] = r.A.String()
		}
	}
	for _, rr := range s.Answer {
		r, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		ip := extra[strings.ToLower(r.Target)]
		if ip == "" {
			ta, err := dnsAsk(server, r.Target, dns.TypeA)
			if err != nil {
				return nil, nil, err
			}
			for _, rr := range ta.Answer {
				if x, ok := rr.(*dns.A); ok {
					ip = x.A.String()
				}
			}
		}
		srv = append(srv, net.JoinHostPort(ip, fmt.Sprint(r.Port)))
	}
	sort.Strings(ips)
	sort.Strings(srv)
	return ips, srv, nil
}

// wantDNS is what DNS should say of the healthy running tasks of st.
func wantDNS(st *cluster.AppStatus) (ips, srv []string) {
	seen := map[string]bool{}
	for _, task := range st.Live() {
		if task.State != "running" || !task.Healthy {
			continue
		}
		addr := task.Addresses["http"]
		srv = append(srv, addr)
		if host, _, err := net.SplitHostPort(addr); err == nil && !seen[host] {
			seen[host] = true
			ips = append(ips, host)
		}
	}
	sort.Strings(ips)
	sort.Strings(srv)
	return ips, srv
}

// checkDNS is an error unless every worker's DNS answers APP.hivemind
// with the healthy tasks of st.
func checkDNS(c *cluster.Cluster, st *cluster.AppStatus) error {
	wantIPs, wantSRV := wantDNS(st)
	for _, w := range c.Workers() {
		server := net.JoinHostPort(w.IP, "7053")
		ips, srv, err := dnsView(server, st.Name)
		if err != nil {
			return err
		}
		if fmt.Sprint(ips) != fmt.Sprint(wantIPs) {
			return fmt.Errorf("DNS of %s: A %s.hivemind = %v, want the healthy tasks' %v",
				w.Name, st.Name, ips, wantIPs)
		}
		if fmt.Sprint(srv) != fmt.Sprint(wantSRV) {
			return fmt.Errorf("DNS of %s: SRV %s.hivemind = %v, want the healthy tasks' %v",
				w.Name, st.Name, srv, wantSRV)
		}
	}
	return nil
}

// DNS on every worker answers APP.hivemind: A records are the IPs of the
// healthy tasks and SRV records their addresses, as app status shows them.
func testDNS(t *testing.T, c *cluster.Cluster) {
	app := trafficApp(c, "tr-dns", 18106, "v1")
	app.Replicas = 3
	deployApp(t, c, app)
	st := waitSettled(t, c, app.Name, 1, 60*time.Second)
	wait(t, 20*time.Second, "every worker's DNS answers for "+app.Name, func() error {
		return checkDNS(c, st)
	})
	ips, srv, err := dnsView(net.JoinHostPort(c.Workers()[0].IP, "7053"), app.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s.hivemind: A %v, SRV %v", app.Name, ips, srv)
	if len(srv) != app.Replicas {
		t.Errorf("%d SRV records, want one per task (%d)", len(srv), app.Replicas)
	}
	if _, err := dnsAsk(net.JoinHostPort(c.Workers()[0].IP, "7053"), "no-such-app.hivemind.", dns.TypeA); err == nil ||
		!strings.Contains(err.Error(), "NXDOMAIN") {
		t.Errorf("an unknown app: %v, want NXDOMAIN", err)
	}
}

// Static stability: with every manager killed, the ingress keeps
// answering under load for 3s without a failure and DNS keeps its
// answers; the managers restarted, the same tasks run on.
func testStaticStability(t *testing.T, c *cluster.Cluster) {
	app := trafficApp(c, "tr-static", 18107, "v1")
	deployApp(t, c, app)
	st := waitSettled(t, c, app.Name, 1, 60*time.Second)
	waitIngress(t, c, app.Ingress, "v1")
	wait(t, 20*time.Second, "every worker's DNS answers for "+app.Name, func() error {
		return checkDNS(c, st)
	})

	t.Cleanup(func() {
		for _, m := range c.Managers() {
			if !c.Running(m.Name) {
				if err := c.Restart(m.Name); err != nil {
					t.Error(err)
				}
			}
		}
		if _, err := c.WaitLeader(60 * time.Second); err != nil {
			t.Error(err)
		}
	})
	l := startLoadOn(t, c, app.Ingress)
	for _, m := range c.Managers() {
		if err := c.Kill(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()

	// For 3s with no manager: the load runs, and DNS is checked on every
	// sample.
	tick := time.NewTicker(cluster.PollInterval)
	defer tick.Stop()
	dnsChecks := 0
	for time.Since(killed) < 3*time.Second {
		if err := checkDNS(c, st); err != nil {
			t.Errorf("with no manager up: %v", err)
			break
		}
		dnsChecks++
		<-tick.C
	}
	rep := l.finish(t)
	rep.check(t, "3s with every manager killed")
	if n := len(rep.answeredBy("v1", killed)); n == 0 {
		t.Errorf("no request was answered after the managers were killed")
	}
	t.Logf("DNS checked %d times on both workers with every manager down", dnsChecks)

	for _, m := range c.Managers() {
		if err := c.Restart(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitLeader(60 * time.Second); err != nil {
		t.Fatalf("no leader after restarting every manager: %v", err)
	}
	after := waitSettled(t, c, app.Name, 1, 60*time.Second)
	if got, want := fmt.Sprint(liveByNode(after)), fmt.Sprint(liveByNode(st)); got != want {
		t.Errorf("tasks after the managers' restart: %s, before: %s", got, want)
	}
}
