// Command bench measures Hivemind on a real cluster on loopback (three
// managers, two workers, a private containerd per worker, the test web
// image from a local registry) and prints a table of the figures with the
// goals of issues 2 and 3 beside them:
//
//   - deploy:     `app deploy` of 3 replicas until all are healthy, against
//     starting the same 3 containers with `ctr run -d`;
//   - failover:   SIGKILL of the Raft leader in a rolling update until a
//     survivor names a new leader, and until the rollout moves again;
//   - rolling:    wall time of a 4-replica rolling update, batch 1,
//     min_healthy_time 2s;
//   - throughput: Raft writes (`app scale` over HTTP) by concurrent clients;
//   - ingress:    HTTP through a worker's ingress against straight to a
//     task, with wrk, alternating (goal of issue 3);
//   - kills:      SIGKILL of the leader, 20 times on an idle and 20 on a
//     busy cluster, until a new leader and until the first write after
//     the kill is acknowledged (p50, p99).
//
// It stops everything it started, containers included, at the end, on
// failure and on Ctrl-C. It asserts nothing: it reports.
//
//	go run ./bench --hivemind bin/hivemind [--runs N] [--only NAME]
package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// benchNames lists the benchmarks in the order they run.
var benchNames = []string{"deploy", "rolling", "failover", "rollback", "throughput", "ingress", "kills"}

type options struct {
	binary   string
	runs     int
	kills    int
	only     map[string]bool
	duration time.Duration
	clients  []int
	subnet   int
	verbose  bool
	keep     bool
	// ingressPerf samples the worker with perf during one more ingress run.
	ingressPerf bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "recovery" {
		os.Exit(recoveryMain(os.Args[2:])) // go run ./bench recovery: bench/recovery.go
	}
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root (containerd runs the containers)")
		os.Exit(1)
	}
	os.Exit(run(opts))
}

func parseFlags() (*options, error) {
	o := &options{}
	flag.StringVar(&o.binary, "hivemind", "bin/hivemind", "path to the hivemind binary")
	flag.IntVar(&o.runs, "runs", 5, "runs of deploy, rolling and failover")
	flag.IntVar(&o.kills, "kills", 20, "leader kills of the kills benchmark, on the idle and again on the busy cluster")
	only := flag.String("only", "", "run only these benchmarks, comma-separated: "+
		strings.Join(benchNames, ", "))
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each throughput run and of each wrk run of the ingress benchmark")
	clients := flag.String("clients", "1,16,64", "concurrent clients of the throughput runs, comma-separated")
	flag.IntVar(&o.subnet, "subnet", 77, "the cluster runs on 127.0.SUBNET.x")
	flag.BoolVar(&o.verbose, "v", false, "also print the harness's progress lines")
	flag.BoolVar(&o.ingressPerf, "ingress-perf", false, "ingress: profile the worker with perf during one extra run (not counted)")
	flag.BoolVar(&o.keep, "keep", false, "keep the run directory (logs, data dirs) after stopping")
	flag.Parse()

	if o.runs < 1 {
		return nil, fmt.Errorf("--runs %d: must be at least 1", o.runs)
	}
	if o.kills < 1 {
		return nil, fmt.Errorf("--kills %d: must be at least 1", o.kills)
	}
	o.only = map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !contains(benchNames, n) {
			return nil, fmt.Errorf("--only %q: want one of %s", n, strings.Join(benchNames, ", "))
		}
		o.only[n] = true
	}
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--clients %q: want positive integers", *clients)
		}
		o.clients = append(o.clients, n)
	}
	return o, nil
}

func (o *options) wants(name string) bool {
	return len(o.only) == 0 || o.only[name]
}

// bench holds the cluster and what the benchmarks found.
type bench struct {
	opts *options
	c    *cluster.Cluster
	api  *api
	t0   time.Time

	mu       sync.Mutex
	rows     []row
	notes    []string
	stopOnce sync.Once
	stopped  chan struct{}
	binCopy  string

	// roll is the state of the app the rolling and failover benchmarks
	// update.
	roll rollState
}

// row is one line of the result table.
type row struct {
	bench, what string
	samples     []float64 // seconds, or the unit in format
	format      func(float64) string
	goal        string
	verdict     string
}

func run(o *options) int {
	b := &bench{opts: o, api: newAPI(), t0: time.Now(), stopped: make(chan struct{})}

	// The binary is copied so that a rebuild of bin/hivemind during the
	// run does not change what a restarted manager runs.
	bin, sum, err := copyBinary(o.binary)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	b.binCopy = bin
	var harness io.Writer = io.Discard
	if o.verbose {
		harness = os.Stderr
	}
	c, err := cluster.New(cluster.Config{
		Binary: bin, Managers: 3, Workers: 2, Subnet: o.subnet,
		Log: harness, KeepDir: o.keep,
	})
	if err != nil {
		os.Remove(bin)
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	b.c = c

	// Ctrl-C or SIGTERM: stop everything, then exit non-zero.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		b.say("received %s: stopping everything the bench started", sig)
		b.stop()
		os.Exit(130)
	}()

	printMachine(o, sum)
	err = b.runAll()
	if err != nil {
		b.say("FAILED: %v", err)
		fmt.Fprintf(os.Stderr, "\nlast lines of each log:\n%s\n", c.Tails(20))
	}
	b.stop()
	b.printTable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: failed:", firstLine(err))
		return 1
	}
	return 0
}

func (b *bench) runAll() error {
	b.say("starting a registry, a containerd per worker, managers m1-m3 on 127.0.%d.1-3 and workers w1-w2 on 127.0.%d.11-12 (run dir %s)",
		b.opts.subnet, b.opts.subnet, b.c.Dir)
	if err := b.c.Start(); err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	b.say("cluster up")
	if err := b.prepull(); err != nil {
		return err
	}
	b.measureCLI()

	var rolling []float64
	for _, name := range benchNames {
		if !b.opts.wants(name) {
			continue
		}
		load := loadAvg()
		b.say("== %s (load average %s)", name, load)
		b.note("%s: load average (1, 5, 15 min) at start %s", name, load)
		var err error
		switch name {
		case "deploy":
			err = b.benchDeploy()
		case "rolling":
			rolling, err = b.benchRolling()
		case "failover":
			err = b.benchFailover(rolling)
		case "rollback":
			err = b.benchRollback(rolling)
		case "throughput":
			err = b.benchThroughput()
		case "ingress":
			err = b.benchIngress()
		case "kills":
			err = b.benchKills()
		}
		b.note("%s: load average at end %s", name, loadAvg())
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// stop stops the cluster once and checks that nothing is left.
func (b *bench) stop() {
	b.stopOnce.Do(func() {
		b.say("stopping: removing apps, stopping workers, managers and containerds, removing containers and the run directory")
		if err := b.c.Stop(); err != nil {
			b.say("stop reported: %v", err)
		}
		left, err := b.c.Leftovers()
		switch {
		case err != nil:
			b.say("could not check what is left: %v", err)
		case len(left) > 0:
			b.say("WARNING: left behind: %s", strings.Join(left, "; "))
		default:
			b.say("stopped; no process, container or mount of the bench is left")
		}
		os.Remove(b.binCopy)
		close(b.stopped)
	})
	<-b.stopped
}

// say prints a progress line on stderr with the time since the start.
func (b *bench) say(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(b.t0).Seconds(), fmt.Sprintf(format, args...))
}

// note keeps a line for the notes under the table.
func (b *bench) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *bench) add(r row) {
	if r.format == nil {
		r.format = seconds
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rows = append(b.rows, r)
}

// printTable prints the results as a Markdown table on stdout.
func (b *bench) printTable() {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Println()
	fmt.Println("| benchmark | measurement | median | min | max | runs | goal | verdict |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range b.rows {
		s := summarize(r.samples)
		med, lo, hi := "-", "-", "-"
		if s.n > 0 {
			med, lo, hi = r.format(s.median), r.format(s.min), r.format(s.max)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %d | %s | %s |\n",
			r.bench, r.what, med, lo, hi, s.n, or(r.goal, "-"), or(r.verdict, "-"))
	}
	fmt.Println()
	for _, n := range b.notes {
		fmt.Println("- " + n)
	}
}

// managerBase is the HTTP API of a manager.
func (b *bench) managerBase(name string) string {
	m, err := b.c.Member(name)
	if err != nil {
		return ""
	}
	return "http://" + m.IP + ":7070"
}

// leaderBase waits for a leader and returns its name and HTTP API.
func (b *bench) leaderBase() (string, string, error) {
	l, err := b.c.WaitLeader(30 * time.Second)
	if err != nil {
		return "", "", err
	}
	return l, b.managerBase(l), nil
}

// copyBinary copies the hivemind binary to a temporary file and returns
// its path and SHA-256.
func copyBinary(path string) (string, string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("hivemind binary: %w", err)
	}
	f, err := os.CreateTemp("", "hivemind-bench-*")
	if err != nil {
		return "", "", err
	}
	_, werr := f.Write(src)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o755)); err != nil {
		os.Remove(f.Name())
		return "", "", err
	}
	abs, _ := filepath.Abs(path)
	sum := fmt.Sprintf("%s (sha256 %x)", abs, sha256.Sum256(src))
	return f.Name(), sum, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
