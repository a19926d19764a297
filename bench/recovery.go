package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/rpc"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// The recovery benchmark (issue 4): how long a manager that comes back
// with an empty data dir takes to catch up, for 10 and 50 MiB of state.
//
//	go run ./bench recovery --hivemind bin/hivemind [--runs N] [--sizes 10,50]
//
// It runs its own cluster of three managers and no worker on
// 127.0.78.x, the managers snapshotting every 64 entries and keeping 16
// after (--snapshot-trailing-logs), so that a wiped manager receives
// the leader's snapshot, as it would with the defaults once the log
// has grown past 10240 entries. The state is apps of no replicas, each
// with a 1 MiB env value, written over gRPC; small writes follow until
// the leader has snapshotted past them. Each run kills a follower
// (SIGKILL), removes its data dir and starts it again with the same
// flags, and measures from that start until the manager's own applied
// index reaches the leader's (its cluster status, polled every 25ms),
// and until its log says the snapshot was installed. With --down the
// manager stays down that long before its start: the leader's retries
// to an unreachable follower back off up to about 10s (raft's
// replication backoff), which a quick restart does not show.

const (
	recoverySubnet = 78
	recoveryPoll   = 25 * time.Millisecond
	recoveryEnv    = 1 << 20
)

var recoveryManagerArgs = []string{
	"--snapshot-threshold", "64",
	"--snapshot-interval", "1s",
	"--snapshot-trailing-logs", "16",
}

// recoveryMain runs the recovery benchmark with the arguments after
// "recovery" and returns the exit code.
func recoveryMain(args []string) int {
	fs := flag.NewFlagSet("recovery", flag.ContinueOnError)
	o := &options{subnet: recoverySubnet}
	fs.StringVar(&o.binary, "hivemind", "bin/hivemind", "path to the hivemind binary")
	fs.IntVar(&o.runs, "runs", 3, "wiped-manager recoveries per state size")
	sizes := fs.String("sizes", "10,50", "state sizes in MiB, comma-separated, increasing")
	fs.IntVar(&o.subnet, "subnet", recoverySubnet, "the cluster runs on 127.0.SUBNET.x")
	fs.BoolVar(&o.verbose, "v", false, "also print the harness's progress lines")
	down := fs.Duration("down", 0, "how long a wiped manager stays down before it starts again")
	fs.BoolVar(&o.keep, "keep", false, "keep the run directory (logs, data dirs) after stopping")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var mibs []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || (len(mibs) > 0 && n <= mibs[len(mibs)-1]) {
			fmt.Fprintf(os.Stderr, "bench: --sizes %q: want increasing positive integers\n", *sizes)
			return 2
		}
		mibs = append(mibs, n)
	}
	if o.runs < 1 {
		fmt.Fprintf(os.Stderr, "bench: --runs %d: must be at least 1\n", o.runs)
		return 2
	}

	b := &bench{opts: o, api: newAPI(), t0: time.Now(), stopped: make(chan struct{})}
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
	b.c, err = cluster.New(cluster.Config{
		Binary: bin, Managers: 3, Subnet: o.subnet, Log: harness,
		KeepDir: o.keep, ManagerArgs: recoveryManagerArgs,
	})
	if err != nil {
		os.Remove(bin)
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		b.say("received %s: stopping everything the bench started", sig)
		b.stop()
		os.Exit(130)
	}()

	printMachine(o, sum)
	r := &recovery{b: b, down: *down, conns: map[string]*grpc.ClientConn{}}
	err = r.run(mibs)
	r.close()
	if err != nil {
		b.say("FAILED: %v", err)
		fmt.Fprintf(os.Stderr, "\nlast lines of each log:\n%s\n", b.c.Tails(20))
	}
	b.stop()
	b.printTable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: failed:", firstLine(err))
		return 1
	}
	return 0
}

// recovery is the state of the recovery benchmark.
type recovery struct {
	b     *bench
	down  time.Duration // a wiped manager's time down before its start
	apps  int           // big apps written so far
	conns map[string]*grpc.ClientConn
	next  int // the follower wiped next, by position among followers
}

func (r *recovery) run(mibs []int) error {
	b := r.b
	b.say("starting a registry and managers m1-m3 on 127.0.%d.1-3 with %s (run dir %s)",
		b.opts.subnet, strings.Join(recoveryManagerArgs, " "), b.c.Dir)
	if err := b.c.Start(); err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	for _, mib := range mibs {
		b.note("%d MiB: load average (1, 5, 15 min) at start %s", mib, loadAvg())
		size, err := r.grow(mib)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", mib, err)
		}
		var total, installed []float64
		for i := 1; i <= b.opts.runs; i++ {
			d, inst, name, err := r.wipeOnce()
			if err != nil {
				return fmt.Errorf("%d MiB, run %d: %w", mib, i, err)
			}
			b.say("%d MiB, run %d: wiped %s; snapshot installed after %s, applied index at the leader's after %s",
				mib, i, name, ms(inst), ms(d))
			total = append(total, secs(d))
			installed = append(installed, secs(inst))
		}
		what := fmt.Sprintf("%d MiB of state (snapshot %.1f MB), down %s", mib, float64(size)/1e6, r.down)
		b.add(row{bench: "recovery", what: what + ": start of a wiped manager until its log says the snapshot is installed",
			samples: installed})
		b.add(row{bench: "recovery", what: what + ": start of a wiped manager until its applied index is the leader's",
			samples: total})
		b.note("%d MiB: load average at end %s", mib, loadAvg())
	}
	return nil
}

// grow writes big apps until there are mib of them, makes the leader
// snapshot past them, and returns the size of the leader's SQLite
// snapshot (GET /v1/snapshot).
func (r *recovery) grow(mib int) (int64, error) {
	b := r.b
	t0 := time.Now()
	for r.apps < mib {
		name := fmt.Sprintf("rec-%03d", r.apps)
		pattern := name + " holds one MiB of env for the recovery benchmark. "
		v := strings.Repeat(pattern, recoveryEnv/len(pattern)+1)[:recoveryEnv]
		sp := &pb.AppSpec{Name: name, Image: b.c.Image("v1"), Env: map[string]string{"BLOB": v}}
		err := r.call(func(ctx context.Context, ctl pb.ControlClient) error {
			_, err := ctl.DeployApp(ctx, &pb.DeployAppRequest{Spec: sp})
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("deploy %s: %w", name, err)
		}
		r.apps++
	}
	b.say("%d apps of 1 MiB written in %s", r.apps, ms(time.Since(t0)))

	// Small writes until the leader has a snapshot past the big ones.
	var last uint64
	err := cluster.WaitFor(2*time.Minute, func() error {
		leader, base, err := b.leaderBase()
		if err != nil {
			return err
		}
		st, err := b.api.clusterStatus(base)
		if err != nil {
			return err
		}
		for _, m := range st.Managers {
			if m.Name == leader && last == 0 {
				last = uint64(m.AppliedIndex)
			}
		}
		idx, err := b.c.SnapshotIndex(leader)
		if err != nil {
			return err
		}
		if last != 0 && idx >= last {
			return nil
		}
		for range 16 {
			err := r.call(func(ctx context.Context, ctl pb.ControlClient) error {
				_, err := ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: "rec-000"})
				return err
			})
			if err != nil {
				return err
			}
		}
		return fmt.Errorf("leader %s: snapshot at %d, big writes up to %d", leader, idx, last)
	})
	if err != nil {
		return 0, err
	}
	_, base, err := b.leaderBase()
	if err != nil {
		return 0, err
	}
	resp, err := http.Get(base + "/v1/snapshot")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /v1/snapshot: %s", resp.Status)
	}
	b.say("leader's snapshot covers every app: %d bytes as SQLite", n)
	return n, err
}

// wipeOnce wipes the next follower and waits until it has caught up. It
// returns the time from its start until its applied index was the
// leader's and until its log said it installed the snapshot.
func (r *recovery) wipeOnce() (total, installed time.Duration, name string, err error) {
	b := r.b
	leader, _, err := b.leaderBase()
	if err != nil {
		return 0, 0, "", err
	}
	var followers []string
	for _, m := range b.c.Managers() {
		if m.Name != leader {
			followers = append(followers, m.Name)
		}
	}
	name = followers[r.next%len(followers)]
	r.next++

	if err := b.c.Kill(name); err != nil {
		return 0, 0, name, err
	}
	if err := b.c.Wipe(name); err != nil {
		return 0, 0, name, err
	}
	time.Sleep(r.down) // the time it takes to replace a disk
	t0 := time.Now()
	if err := b.c.Restart(name); err != nil {
		return 0, 0, name, err
	}
	base := b.managerBase(name)
	deadline := t0.Add(3 * time.Minute)
	for {
		if caughtUp(b, base, name) {
			total = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, name, fmt.Errorf("%s not caught up after %s", name, time.Since(t0))
		}
		time.Sleep(recoveryPoll)
	}
	lines, err := b.c.GrepSinceStart(name, "Installed remote snapshot")
	if err != nil {
		return 0, 0, name, err
	}
	if len(lines) == 0 {
		return 0, 0, name, errors.New(name + " caught up without installing a snapshot")
	}
	installed = b.logSince(name, "Installed remote snapshot", t0)
	return total, installed, name, nil
}

// caughtUp reports whether name, asked itself, follows a leader and has
// applied at least the leader's applied index.
func caughtUp(b *bench, base, name string) bool {
	st, err := b.api.clusterStatus(base)
	if err != nil || st.Leader == "" || st.Leader == name {
		return false
	}
	var self, leader int64 = -1, -1
	for _, m := range st.Managers {
		if m.Name == name && m.State == "follower" {
			self = int64(m.AppliedIndex)
		}
		if m.Name == st.Leader {
			leader = int64(m.AppliedIndex)
		}
	}
	return self >= 0 && leader > 0 && self >= leader
}

// call runs f against the leader's gRPC API, retrying for a minute.
func (r *recovery) call(f func(context.Context, pb.ControlClient) error) error {
	return cluster.WaitFor(time.Minute, func() error {
		leader, err := r.b.c.Leader()
		if err != nil {
			return err
		}
		cc, ok := r.conns[leader]
		if !ok {
			m, err := r.b.c.Member(leader)
			if err != nil {
				return err
			}
			if cc, err = rpc.Dial(m.IP + ":7071"); err != nil {
				return err
			}
			r.conns[leader] = cc
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return f(ctx, pb.NewControlClient(cc))
	})
}

func (r *recovery) close() {
	for _, cc := range r.conns {
		cc.Close()
	}
}
