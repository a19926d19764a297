package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/internal/testenv"
)

const (
	ingressApp      = "ingr"
	ingressReplicas = 2 // the scheduler spreads them, one per worker
	ingressRounds   = 3 // ingress/direct pairs per load shape
)

// wrkShape is one load shape: threads, connections.
type wrkShape struct{ threads, conns int }

func (s wrkShape) String() string { return fmt.Sprintf("-t%d -c%d", s.threads, s.conns) }

var ingressShapes = []wrkShape{{2, 32}, {1, 1}}

// wrkResult is what one wrk run printed, plus the CPU the processes of
// the path used during it.
type wrkResult struct {
	target        string
	rps           float64
	requests      int64
	p50, p99      time.Duration
	errors        string // socket errors and non-2xx, "" when none
	load          string // load average at the start of the run
	cpuWrk        float64
	cpuWorker     float64 // the worker process that runs the ingress
	cpuTasks      float64 // both tasks' webservers
	cpuTotalBusy  float64 // the machine's busy CPU seconds (all cores)
	elapsedSecond float64
}

// benchIngress measures HTTP through the ingress against straight to a
// task, with wrk from Debian, on the bench's cluster: an app of 2
// replicas (one per worker) with `ingress: P`; wrk runs against w1's
// ingress (w1.IP:P, balanced over both tasks) and against w1's task
// (its IP:hostport), alternating, the same shape and duration each, in
// the same run. The figure is ingress throughput over direct throughput
// and the p99 the ingress adds, per ingress/direct pair; rows give the
// median over the pairs.
func (b *bench) benchIngress() error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk is not installed (apt-get install -y wrk, or make bench): %w", err)
	}
	workers := b.c.Workers()
	if len(workers) < 2 {
		return fmt.Errorf("want 2 workers, have %d", len(workers))
	}
	w1 := workers[0]
	port, err := freeOnAll(workers)
	if err != nil {
		return err
	}
	spec := cluster.WebApp{Name: ingressApp, Image: b.c.Image("v1"),
		Replicas: ingressReplicas, Ingress: port}
	if _, err := b.deploySpec(spec, "ingress"); err != nil {
		return err
	}
	direct, taskIDs, err := b.waitIngressApp(w1.Name)
	if err != nil {
		return err
	}
	ingress := net.JoinHostPort(w1.IP, strconv.Itoa(port))
	if err := waitBalanced(ingress, taskIDs); err != nil {
		return err
	}
	workerPID, err := memberPID(b.binCopy, w1.Name)
	if err != nil {
		return err
	}
	taskPIDs := b.allTaskPIDs()
	b.say("app %s: 2 tasks %v; ingress %s (worker %s, pid %d), direct %s (the task on %s)",
		ingressApp, taskIDs, ingress, w1.Name, workerPID, direct, w1.Name)

	// Warm both paths (connections, page cache, the proxy's transports).
	for _, addr := range []string{ingress, direct} {
		if _, err := b.wrk(addr, wrkShape{2, 32}, 2*time.Second, workerPID, taskPIDs); err != nil {
			return err
		}
	}

	for _, shape := range ingressShapes {
		var in, di []*wrkResult
		for round := 1; round <= ingressRounds; round++ {
			// Alternate which goes first, so neither always follows the other.
			order := []string{ingress, direct}
			if round%2 == 0 {
				order = []string{direct, ingress}
			}
			for _, addr := range order {
				r, err := b.wrk(addr, shape, b.opts.duration, workerPID, taskPIDs)
				if err != nil {
					return err
				}
				via := "direct "
				if addr == ingress {
					via = "ingress"
					in = append(in, r)
				} else {
					di = append(di, r)
				}
				b.say("%s round %d %s %s: %.0f req/s, p50 %s, p99 %s; CPU s: wrk %.2f, worker %.2f, tasks %.2f, machine busy %.2f of %.0f; load %s%s",
					shape, round, via, addr, r.rps, r.p50, r.p99, r.cpuWrk, r.cpuWorker,
					r.cpuTasks, r.cpuTotalBusy, r.elapsedSecond*2, r.load, errNote(r.errors))
			}
		}
		b.addIngressRows(shape, in, di)
	}

	if b.opts.ingressPerf {
		if err := b.perfIngress(ingress, workerPID, taskPIDs); err != nil {
			b.say("perf: %v", err)
			b.note("ingress: perf profile failed: %v", err)
		}
	}

	b.note("ingress: app %s, %d replicas (one per worker), ingress port %d; wrk --latency %s, %s per run, %d ingress/direct pairs per shape, order alternating; ingress = %s (w1's ingress, balancing over both tasks), direct = %s (w1's task, its host port)",
		ingressApp, ingressReplicas, port, strings.Join(shapeNames(), " and "), b.opts.duration,
		ingressRounds, ingress, direct)
	b.note("ingress: wrk, the worker (its proxy), both tasks and the rest of the cluster share the machine's %s cores: CPU the proxy uses is CPU wrk and the task cannot, so the ratio is a floor for a proxy on a machine of its own", strconv.Itoa(runtime.NumCPU()))
	return nil
}

func errNote(s string) string {
	if s == "" {
		return ""
	}
	return "; ERRORS: " + s
}

func shapeNames() []string {
	var out []string
	for _, s := range ingressShapes {
		out = append(out, s.String())
	}
	return out
}

// addIngressRows adds the rows of one shape: pairs are (in[i], di[i]).
func (b *bench) addIngressRows(shape wrkShape, in, di []*wrkResult) {
	var ratio, addP99, addP50, rin, rdi, p50in, p50di, p99in, p99di []float64
	var cpuW, cpuWrkIn, cpuWrkDi, cpuTaskIn, cpuTaskDi []float64
	for i := range in {
		ratio = append(ratio, in[i].rps/di[i].rps)
		addP99 = append(addP99, secs(in[i].p99-di[i].p99))
		addP50 = append(addP50, secs(in[i].p50-di[i].p50))
		rin = append(rin, in[i].rps)
		rdi = append(rdi, di[i].rps)
		p50in = append(p50in, secs(in[i].p50))
		p50di = append(p50di, secs(di[i].p50))
		p99in = append(p99in, secs(in[i].p99))
		p99di = append(p99di, secs(di[i].p99))
		// CPU per request, in microseconds.
		cpuW = append(cpuW, perReq(in[i].cpuWorker, in[i].requests))
		cpuWrkIn = append(cpuWrkIn, perReq(in[i].cpuWrk, in[i].requests))
		cpuWrkDi = append(cpuWrkDi, perReq(di[i].cpuWrk, di[i].requests))
		cpuTaskIn = append(cpuTaskIn, perReq(in[i].cpuTasks, in[i].requests))
		cpuTaskDi = append(cpuTaskDi, perReq(di[i].cpuTasks, di[i].requests))
		for _, r := range []*wrkResult{in[i], di[i]} {
			if r.errors != "" {
				b.note("ingress: %s %s: %s", shape, r.target, r.errors)
			}
		}
	}
	name := "5 ingress"
	rate := func(x float64) string { return fmt.Sprintf("%.0f req/s", x) }
	pct := func(x float64) string { return fmt.Sprintf("%.1f %%", x*100) }
	us := func(x float64) string { return fmt.Sprintf("%.0f µs", x) }
	signedMS := func(x float64) string { return fmt.Sprintf("%+.2f ms", x*1000) }
	ms2 := func(x float64) string { return fmt.Sprintf("%.2f ms", x*1000) }

	sr, sp := summarize(ratio), summarize(addP99)
	b.add(row{bench: name, what: shape.String() + ": ingress throughput", samples: rin, format: rate})
	b.add(row{bench: name, what: shape.String() + ": direct throughput", samples: rdi, format: rate})
	b.add(row{bench: name, what: shape.String() + ": ingress / direct throughput (per pair)", samples: ratio,
		format: pct, goal: "at least 80 % (issue 3)", verdict: verdict(sr.median >= 0.80, ratio, func(x float64) bool { return x >= 0.80 })})
	b.add(row{bench: name, what: shape.String() + ": latency p50 ingress", samples: p50in, format: ms2})
	b.add(row{bench: name, what: shape.String() + ": latency p50 direct", samples: p50di, format: ms2})
	b.add(row{bench: name, what: shape.String() + ": p50 added by the ingress (per pair)", samples: addP50, format: signedMS})
	b.add(row{bench: name, what: shape.String() + ": latency p99 ingress", samples: p99in, format: ms2})
	b.add(row{bench: name, what: shape.String() + ": latency p99 direct", samples: p99di, format: ms2})
	b.add(row{bench: name, what: shape.String() + ": p99 added by the ingress (per pair)", samples: addP99,
		format: signedMS, goal: "under 1 ms (issue 3)", verdict: verdict(sp.median < 0.001, addP99, func(x float64) bool { return x < 0.001 })})
	b.add(row{bench: name, what: shape.String() + ": CPU per request, worker (proxy), via ingress", samples: cpuW, format: us})
	b.add(row{bench: name, what: shape.String() + ": CPU per request, wrk, via ingress", samples: cpuWrkIn, format: us})
	b.add(row{bench: name, what: shape.String() + ": CPU per request, wrk, direct", samples: cpuWrkDi, format: us})
	b.add(row{bench: name, what: shape.String() + ": CPU per request, both tasks, via ingress", samples: cpuTaskIn, format: us})
	b.add(row{bench: name, what: shape.String() + ": CPU per request, both tasks, direct", samples: cpuTaskDi, format: us})
	var loads []string
	for i := range in {
		loads = append(loads, in[i].load, di[i].load)
	}
	b.note("ingress: %s: load average at the start of each run (ingress, direct pairs): %s", shape, strings.Join(loads, " | "))
}

// verdict is "met" or "not met" on the median, with how many pairs met.
func verdict(met bool, xs []float64, ok func(float64) bool) string {
	n := 0
	for _, x := range xs {
		if ok(x) {
			n++
		}
	}
	v := "not met"
	if met {
		v = "met"
	}
	return fmt.Sprintf("%s (median; %d of %d pairs)", v, n, len(xs))
}

func perReq(cpu float64, n int64) float64 {
	if n == 0 {
		return 0
	}
	return cpu / float64(n) * 1e6
}

// freeOnAll returns a port free on every worker's IP.
func freeOnAll(workers []*cluster.Member) (int, error) {
	for range 20 {
		port, err := testenv.FreePort(workers[0].IP)
		if err != nil {
			return 0, err
		}
		free := true
		for _, w := range workers[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(w.IP, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("no port free on every worker")
}

// waitIngressApp waits until the app's 2 tasks run healthy on distinct
// workers and returns the http address of the one on worker, and the task
// IDs.
func (b *bench) waitIngressApp(worker string) (string, []string, error) {
	var direct string
	var ids []string
	err := cluster.WaitFor(90*time.Second, func() error {
		_, base, err := b.leaderBase()
		if err != nil {
			return err
		}
		st, err := b.api.appStatus(base, ingressApp)
		if err != nil {
			return err
		}
		direct, ids = "", nil
		nodes := map[string]bool{}
		for _, t := range st.Tasks {
			if !t.live() {
				continue
			}
			if t.State != "running" || !t.Healthy {
				return fmt.Errorf("task %s on %s: %s healthy=%t", t.ID, t.Node, t.State, t.Healthy)
			}
			ids = append(ids, t.ID)
			nodes[t.Node] = true
			if t.Node == worker {
				direct = t.httpAddr()
			}
		}
		if len(ids) != ingressReplicas || len(nodes) != ingressReplicas {
			return fmt.Errorf("%d healthy tasks on %d workers, want %d on %d", len(ids), len(nodes), ingressReplicas, ingressReplicas)
		}
		if direct == "" {
			return fmt.Errorf("no task with an http address on %s", worker)
		}
		return nil
	})
	return direct, ids, err
}

// waitBalanced waits until the ingress at addr has answered from every
// task.
func waitBalanced(addr string, ids []string) error {
	seen := map[string]bool{}
	return cluster.WaitFor(30*time.Second, func() error {
		body, err := cluster.Get(addr, "/")
		if err != nil {
			return fmt.Errorf("ingress %s: %w", addr, err)
		}
		for _, id := range ids {
			if strings.HasSuffix(body, "TASK="+id) {
				seen[id] = true
			}
		}
		if len(seen) < len(ids) {
			return fmt.Errorf("ingress %s answered from %d of %d tasks", addr, len(seen), len(ids))
		}
		return nil
	})
}

// memberPID finds the process of the cluster member name: the bench's
// copy of the binary with --name NAME.
func memberPID(bin, name string) (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if args[0] != bin {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--name" && args[i+1] == name {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process of %s --name %s", bin, name)
}

// allTaskPIDs returns the init PIDs of every worker's containers.
func (b *bench) allTaskPIDs() []int {
	var out []int
	for _, w := range b.c.Workers() {
		m, err := b.c.TaskPIDs(w.Name)
		if err != nil {
			b.say("task PIDs of %s: %v", w.Name, err)
			continue
		}
		for _, p := range m {
			out = append(out, int(p))
		}
	}
	return out
}

// cpuOf is utime+stime of pid in seconds (0 when it cannot be read).
func cpuOf(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// busyCPU is the machine's non-idle CPU seconds since boot, all cores.
func busyCPU() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fs := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy float64
	for i, v := range fs[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		busy += x
	}
	return busy / 100
}

// wrk runs `wrk --latency -tT -cC -dD http://addr/` and parses it.
func (b *bench) wrk(addr string, shape wrkShape, d time.Duration, workerPID int, taskPIDs []int) (*wrkResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	args := []string{"--latency", fmt.Sprintf("-t%d", shape.threads), fmt.Sprintf("-c%d", shape.conns),
		fmt.Sprintf("-d%ds", max(1, int(d.Seconds()))), "--timeout", "5s", "http://" + addr + "/"}
	cmd := exec.CommandContext(ctx, "wrk", args...)
	r := &wrkResult{target: addr, load: loadAvg()}

	tasksBefore := 0.0
	for _, p := range taskPIDs {
		tasksBefore += cpuOf(p)
	}
	workerBefore, busyBefore := cpuOf(workerPID), busyCPU()
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	r.elapsedSecond = time.Since(t0).Seconds()
	r.cpuWorker = cpuOf(workerPID) - workerBefore
	r.cpuTotalBusy = busyCPU() - busyBefore
	for _, p := range taskPIDs {
		r.cpuTasks += cpuOf(p)
	}
	r.cpuTasks -= tasksBefore
	if err != nil {
		return nil, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out)
	}
	if ps := cmd.ProcessState; ps != nil {
		r.cpuWrk = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err := parseWrk(string(out), r); err != nil {
		return nil, fmt.Errorf("wrk %s: %w:\n%s", strings.Join(args, " "), err, out)
	}
	return r, nil
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	rePct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reSocket   = regexp.MustCompile(`Socket errors:[^\n]*`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: \d+`)
)

// parseWrk reads the figures of wrk --latency's output into r.
func parseWrk(out string, r *wrkResult) error {
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return errors.New("no Requests/sec line")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reRequests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range rePct.FindAllStringSubmatch(out, -1) {
		d, err := wrkDuration(m[2], m[3])
		if err != nil {
			return err
		}
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return errors.New("no latency distribution (50% and 99%)")
	}
	var errs []string
	if s := reSocket.FindString(out); s != "" {
		errs = append(errs, s)
	}
	if s := reNon2xx.FindString(out); s != "" {
		errs = append(errs, s)
	}
	r.errors = strings.Join(errs, "; ")
	return nil
}

func wrkDuration(v, unit string) (time.Duration, error) {
	x, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	switch unit {
	case "us":
		return time.Duration(x * float64(time.Microsecond)), nil
	case "ms":
		return time.Duration(x * float64(time.Millisecond)), nil
	default:
		return time.Duration(x * float64(time.Second)), nil
	}
}

// perfIngress samples the worker's CPU with perf during one more ingress
// run of the first shape (not counted in the figures) and prints the top
// symbols.
func (b *bench) perfIngress(ingress string, workerPID int, taskPIDs []int) error {
	if _, err := exec.LookPath("perf"); err != nil {
		return err
	}
	data := filepath.Join(b.c.Dir, "ingress.perf.data")
	d := b.opts.duration
	rec := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(workerPID),
		"-o", data, "--", "sleep", strconv.Itoa(int(d.Seconds())))
	var recOut strings.Builder
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		return err
	}
	r, werr := b.wrk(ingress, ingressShapes[0], d, workerPID, taskPIDs)
	if err := rec.Wait(); err != nil {
		return fmt.Errorf("perf record: %w: %s", err, recOut.String())
	}
	if werr != nil {
		return werr
	}
	b.say("perf run %s ingress: %.0f req/s, p99 %s (perf running, not counted)", ingressShapes[0], r.rps, r.p99)
	for _, sort := range []string{"dso", "symbol"} {
		out, err := exec.Command("perf", "report", "-i", data, "--no-children", "--stdio",
			"-g", "none", "--sort", sort, "--percent-limit", "1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("perf report: %w: %s", err, out)
		}
		b.say("perf report of the worker (self time, --sort %s):\n%s", sort, perfTop(string(out), 30))
	}
	out, err := exec.Command("perf", "report", "-i", data, "--children", "--stdio",
		"-g", "none", "--sort", "symbol", "--percent-limit", "3").CombinedOutput()
	if err == nil {
		b.say("perf report of the worker (with children, --sort symbol):\n%s", perfTop(string(out), 45))
	}
	return nil
}

// perfTop keeps the first n lines of a perf report that are not comments.
func perfTop(out string, n int) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		keep = append(keep, l)
		if len(keep) == n {
			break
		}
	}
	return strings.Join(keep, "\n")
}
