package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/rpc"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// wipeSubnet is the loopback subnet of the wiped-manager tests. They
// take turns on it (wipeSubnetMu), each with a cluster of its own.
const wipeSubnet = 18

var wipeSubnetMu sync.Mutex

// wipeManagerArgs make the managers snapshot every 64 entries and keep
// only 16 after a snapshot, so that a manager further behind than that,
// or one with an empty data dir, gets the leader's snapshot rather
// than its log.
var wipeManagerArgs = []string{
	"--snapshot-threshold", "64",
	"--snapshot-interval", "1s",
	"--snapshot-trailing-logs", "16",
}

// installedLine is what Raft logs on a follower once it has restored a
// snapshot the leader sent; copiedLine, just before it, gives the size.
const (
	installedLine = "Installed remote snapshot"
	copiedLine    = "copied to local snapshot"
)

// startWipeCluster runs t in parallel with other tests but after any
// other test on subnet 18, and starts 3 managers and workers workers
// there with wipeManagerArgs. The cluster is stopped when t ends.
func startWipeCluster(t *testing.T, workers int) *cluster.Cluster {
	t.Helper()
	t.Parallel()
	wipeSubnetMu.Lock()
	t.Cleanup(wipeSubnetMu.Unlock) // runs last, after the stop below
	c, err := cluster.Start(cluster.Config{
		Binary:      binary,
		Managers:    3,
		Workers:     workers,
		Subnet:      wipeSubnet,
		Log:         harnessLog,
		ManagerArgs: wipeManagerArgs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopAll(c); err != nil {
			t.Error(err)
		}
	})
	onFailure(t, c)
	return c
}

// Issue 4, fault tests: wipe one manager's data dir and add it back.
// A follower is killed, its data dir removed, and it is started again
// with the same name and address: the leader, whose log no longer
// starts at 1, sends it a snapshot. It is a voter again, its log says
// it installed the snapshot, its applied index reaches the leader's,
// its own replica holds the same apps and tasks, and as leader it
// acknowledges writes that the workers carry out.
func TestWipedManagerRejoins(t *testing.T) {
	c := startWipeCluster(t, 2)
	t0 := time.Now()

	web := cluster.WebApp{Name: "wipe-web", Image: c.Image("v1"), Replicas: 2}
	filler := cluster.WebApp{Name: "wipe-filler", Image: c.Image("v1"), Replicas: 0}
	deploy(t, c, web.YAML())
	deploy(t, c, filler.YAML())
	waitSettled(t, c, web.Name, 1, 60*time.Second)

	// Over twice the snapshot threshold in scale writes, so that every
	// manager has snapshotted and cut its log.
	const writes = 160
	acked := 0
	wait(t, 60*time.Second, fmt.Sprintf("%d scale writes acknowledged", writes), func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		m, err := c.Member(l)
		if err != nil {
			return err
		}
		for acked < writes {
			if err := snapScale(m, filler.Name, 0); err != nil {
				return fmt.Errorf("write %d of %d: %w", acked+1, writes, err)
			}
			acked++
		}
		return nil
	})
	wait(t, 30*time.Second, "every manager has a snapshot", func() error {
		for _, m := range c.Managers() {
			idx, err := c.SnapshotIndex(m.Name)
			if err != nil {
				return err
			}
			if idx == 0 {
				return fmt.Errorf("manager %s has no snapshot yet", m.Name)
			}
		}
		return nil
	})
	t.Logf("apps deployed and %d writes acknowledged after %s", writes, since(t0))

	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wiped := wipeFollower(t, c, leader)
	ts := time.Now()
	if err := c.WipeManager(wiped); err != nil {
		t.Fatal(err)
	}
	t.Logf("wiped %s and started it again; %s leads", wiped, leader)
	waitCaughtUp(t, c, wiped, 60*time.Second)
	t.Logf("%s caught up %s after its start", wiped, since(ts))
	checkStartedEmpty(t, c, wiped)
	size := checkInstalled(t, c, wiped)
	t.Logf("%s installed a snapshot of %d bytes", wiped, size)

	// Its own replica, not the leader's answer, holds the same state.
	dir := t.TempDir()
	const query = `select 'app|' || name || '|' || version from apps
		union all select 'task|' || id || '|' || app || '|' || node || '|' || version
			|| '|' || json_extract(json, '$.desired') from tasks
		union all select 'node|' || name || '|' || json_extract(json, '$.role') from nodes
		order by 1`
	sameReplica(t, c, wiped, leader, dir, query)
	t.Logf("%s's replica holds the leader's apps, tasks and nodes, %s after its start", wiped, since(ts))

	// It can lead, and acknowledges writes as leader.
	wait(t, 30*time.Second, "leadership moved to "+wiped, func() error {
		l, err := c.Leader()
		if err != nil || l == wiped {
			return err
		}
		if _, err := c.CLIAt(wiped, "raft", "transfer-leadership", wiped); err != nil {
			return err
		}
		return fmt.Errorf("%s leads, not %s", l, wiped)
	})
	after := cluster.WebApp{Name: "wipe-after", Image: c.Image("v2"), Replicas: 1}
	if out, err := c.DeployAt(wiped, after.YAML()); err != nil {
		t.Fatalf("app deploy %s through %s: %v (output %q)", after.Name, wiped, err, out)
	}
	if out, err := c.CLIAt(wiped, "app", "scale", web.Name, "3"); err != nil {
		t.Fatalf("app scale %s 3 through %s: %v (output %q)", web.Name, wiped, err, out)
	}
	t.Logf("%s leads and acknowledged a deploy and a scale, %s after its start", wiped, since(ts))

	// End checks: every acknowledged write is there on every manager,
	// exactly the desired tasks run, none twice.
	stWeb := waitSettled(t, c, web.Name, 1, 60*time.Second)
	stAfter := waitSettled(t, c, after.Name, 1, 60*time.Second)
	if stWeb.Replicas != 3 {
		t.Errorf("app %s: replicas %d, want 3", web.Name, stWeb.Replicas)
	}
	waitAnswers(t, c, web.Name, "v1", 30*time.Second)
	waitAnswers(t, c, after.Name, "v2", 30*time.Second)
	want := fmt.Sprintf("%s|1\n%s|1\n%s|1", after.Name, filler.Name, web.Name)
	for _, m := range c.Managers() {
		wait(t, 30*time.Second, "manager "+m.Name+"'s replica holds every acknowledged app", func() error {
			got, err := localApps(c, m.Name, filepath.Join(dir, m.Name+"-end.db"))
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s's replica has apps %q, want %q", m.Name, got, want)
			}
			return nil
		})
	}
	wait(t, 30*time.Second, "workers' containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})
	checkRunningOnce(t, c, stWeb, 3)
	checkRunningOnce(t, c, stAfter, 1)
	t.Logf("done %s after the cluster was up", since(t0))
}

// bigApps and bigEnv make the state of TestLargeSnapshotInstall: 56
// apps of no replicas with an env value of 1 MiB each, over 50 MiB as
// a SQLite snapshot.
const (
	bigApps    = 56
	bigEnv     = 1 << 20
	bigWriters = 4
	// bigMin is the smallest snapshot the test accepts.
	bigMin = 50 << 20
)

// Issue 4, operations: a snapshot of over 50 MiB installs on a lagging
// manager (stopped during the writes, then started again) and on a
// wiped one. Each reaches the leader's applied index with the same
// apps in its own replica, and the cluster acknowledges a write
// through the wiped one that the worker carries out.
func TestLargeSnapshotInstall(t *testing.T) {
	c := startWipeCluster(t, 1)
	t0 := time.Now()

	web := cluster.WebApp{Name: "big-web", Image: c.Image("v1"), Replicas: 1}
	deploy(t, c, web.YAML())
	waitSettled(t, c, web.Name, 1, 60*time.Second)

	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lagging := wipeFollower(t, c, leader)
	cl := newBigClients(t, c)

	// The writes, with the lagging manager killed after the first few.
	tw := time.Now()
	names := make(chan int, bigApps)
	for i := range bigApps {
		names <- i
	}
	close(names)
	var written atomic.Int64
	killed := make(chan error, 1)
	var wg sync.WaitGroup
	errs := make([]error, bigWriters)
	for w := range bigWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				if err := cl.deploy(bigSpec(c, i)); err != nil {
					errs[w] = err
					return
				}
				if written.Add(1) == 8 {
					killed <- c.Kill(lagging)
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := <-killed; err != nil {
		t.Fatalf("kill %s: %v", lagging, err)
	}
	t.Logf("%d apps of %d KiB written in %s; %s killed after the 8th", bigApps, bigEnv>>10,
		since(tw), lagging)

	// Small writes until the leader has a snapshot that holds every big
	// app (and so a log that starts after the lagging manager's).
	var last uint64
	wait(t, 60*time.Second, "the leader snapshotted past the big writes", func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		applied, err := snapAppliedIndex(c, l)
		if err != nil {
			return err
		}
		if last == 0 {
			last = applied
		}
		idx, err := c.SnapshotIndex(l)
		if err != nil {
			return err
		}
		if idx >= last {
			leader = l
			return nil
		}
		for range 16 {
			if err := cl.scale(fmt.Sprintf("big-%02d", 0), 0); err != nil {
				return err
			}
		}
		return fmt.Errorf("leader %s: snapshot at index %d, last big write by %d", l, idx, last)
	})
	t.Logf("leader %s snapshotted past index %d after %s", leader, last, since(t0))

	// The one wiped is the manager that neither lags nor leads.
	var wiped string
	for _, m := range c.Managers() {
		if m.Name != leader && m.Name != lagging {
			wiped = m.Name
		}
	}

	// The leader's replica, kept for the restore below.
	dir := t.TempDir()
	const query = `select name || '|' || version || '|' || length(json) from apps order by name`
	saved := filepath.Join(dir, "saved.db")
	size, err := saveReplica(c, leader, saved)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := sqliteQuery(saved, query)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(ref, "\n") + 1; n != bigApps+1 {
		t.Fatalf("leader %s holds %d apps, want %d", leader, n, bigApps+1)
	}
	if size < bigMin {
		t.Fatalf("leader %s: snapshot save wrote %d bytes, want at least %d", leader, size, bigMin)
	}
	t.Logf("leader %s: snapshot save wrote %d bytes", leader, size)

	for _, step := range []struct {
		name, what string
		empty      bool // started on an empty data dir
		start      func() error
	}{
		{lagging, "lagging", false, func() error { return c.Restart(lagging) }},
		{wiped, "wiped", true, func() error { return c.WipeManager(wiped) }},
	} {
		ts := time.Now()
		if err := step.start(); err != nil {
			t.Fatal(err)
		}
		waitCaughtUp(t, c, step.name, 90*time.Second)
		t.Logf("%s manager %s caught up %s after its start", step.what, step.name, since(ts))
		if step.empty {
			checkStartedEmpty(t, c, step.name)
		}
		got := checkInstalled(t, c, step.name)
		if got < bigMin {
			t.Errorf("%s installed a snapshot of %d bytes, want at least %d", step.name, got, bigMin)
		}
		t.Logf("%s installed a snapshot of %d bytes", step.name, got)
		sameReplica(t, c, step.name, leader, dir, query)
	}

	// The saved state restored through a follower: the leader restores
	// it and sends it to both followers, which install it again.
	installs := map[string]int{}
	for _, name := range []string{lagging, wiped} {
		lines, err := c.GrepSinceStart(name, installedLine)
		if err != nil {
			t.Fatal(err)
		}
		installs[name] = len(lines)
	}
	tr := time.Now()
	if out, err := bigRestore(c, wiped, saved); err != nil {
		t.Fatalf("snapshot restore of %d bytes through %s: %v (output %q)", size, wiped, err, out)
	}
	t.Logf("snapshot restore of %d bytes through %s took %s", size, wiped, since(tr))
	for _, name := range []string{lagging, wiped} {
		wait(t, 90*time.Second, name+" installed the restored snapshot", func() error {
			lines, err := c.GrepSinceStart(name, installedLine)
			if err != nil {
				return err
			}
			if len(lines) <= installs[name] {
				return fmt.Errorf("%s: %d %q lines, as before the restore", name, len(lines), installedLine)
			}
			return nil
		})
		waitCaughtUp(t, c, name, 90*time.Second)
		sameReplica(t, c, name, leader, dir, query)
	}
	t.Logf("both followers hold the restored state %s after the restore", since(tr))

	// A write through the wiped manager is acknowledged and carried out.
	if out, err := c.CLIAt(wiped, "app", "scale", web.Name, "2"); err != nil {
		t.Fatalf("app scale %s 2 through %s: %v (output %q)", web.Name, wiped, err, out)
	}
	st := waitSettled(t, c, web.Name, 1, 60*time.Second)
	if st.Replicas != 2 {
		t.Errorf("app %s: replicas %d, want 2", web.Name, st.Replicas)
	}
	waitAnswers(t, c, web.Name, "v1", 30*time.Second)
	apps, err := c.Apps()
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != bigApps+1 {
		t.Errorf("app ls lists %d apps, want %d", len(apps), bigApps+1)
	}
	wait(t, 30*time.Second, "the worker's containers are exactly the live tasks", func() error {
		return containersMatch(c)
	})
	checkRunningOnce(t, c, st, 2)
	t.Logf("done %s after the cluster was up", since(t0))
}

// bigSpec is big app i: no replicas, one env value of bigEnv bytes.
func bigSpec(c *cluster.Cluster, i int) *pb.AppSpec {
	pattern := fmt.Sprintf("app %02d of the large snapshot test. ", i)
	v := strings.Repeat(pattern, bigEnv/len(pattern)+1)[:bigEnv]
	return &pb.AppSpec{
		Name:  fmt.Sprintf("big-%02d", i),
		Image: c.Image("v1"),
		Env:   map[string]string{"BLOB": v},
	}
}

// bigClients calls the Control API over gRPC, the way the CLI's HTTP
// calls end up, on whichever manager leads.
type bigClients struct {
	c     *cluster.Cluster
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newBigClients(t *testing.T, c *cluster.Cluster) *bigClients {
	b := &bigClients{c: c, conns: map[string]*grpc.ClientConn{}}
	t.Cleanup(func() {
		for _, cc := range b.conns {
			cc.Close()
		}
	})
	return b
}

// control returns a client of the leader of the moment.
func (b *bigClients) control() (pb.ControlClient, error) {
	l, err := b.c.Leader()
	if err != nil {
		return nil, err
	}
	m, err := b.c.Member(l)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cc, ok := b.conns[l]
	if !ok {
		cc, err = rpc.Dial(m.IP + ":7071")
		if err != nil {
			return nil, err
		}
		b.conns[l] = cc
	}
	return pb.NewControlClient(cc), nil
}

// retry calls f with the leader's client until it succeeds, for up to
// a minute: a leader change under load refuses a write, and a write
// acknowledged only on the retry is acknowledged all the same.
func (b *bigClients) retry(what string, f func(context.Context, pb.ControlClient) error) error {
	return cluster.WaitFor(time.Minute, func() error {
		ctl, err := b.control()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f(ctx, ctl); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

func (b *bigClients) deploy(sp *pb.AppSpec) error {
	return b.retry("deploy "+sp.GetName(), func(ctx context.Context, ctl pb.ControlClient) error {
		_, err := ctl.DeployApp(ctx, &pb.DeployAppRequest{Spec: sp})
		return err
	})
}

func (b *bigClients) scale(app string, replicas int32) error {
	return b.retry("scale "+app, func(ctx context.Context, ctl pb.ControlClient) error {
		_, err := ctl.ScaleApp(ctx, &pb.ScaleAppRequest{Name: app, Replicas: replicas})
		return err
	})
}

// wipeFollower returns a manager other than leader.
func wipeFollower(t *testing.T, c *cluster.Cluster, leader string) string {
	t.Helper()
	for _, m := range c.Managers() {
		if m.Name != leader {
			return m.Name
		}
	}
	t.Fatal("no follower")
	return ""
}

// wipePeer is one entry of `raft peers -o json`.
type wipePeer struct {
	Name         string      `json:"name"`
	State        string      `json:"state"`
	Voter        bool        `json:"voter"`
	Leader       bool        `json:"leader"`
	AppliedIndex cluster.Num `json:"applied_index"`
}

// waitCaughtUp waits until name, asked itself, is a voter following a
// leader (or leading) with an applied index at or past the leader's.
func waitCaughtUp(t *testing.T, c *cluster.Cluster, name string, timeout time.Duration) {
	t.Helper()
	wait(t, timeout, name+" is a voter with the leader's applied index", func() error {
		var peers []wipePeer
		if err := c.JSONAt(name, &peers, "raft", "peers"); err != nil {
			return err
		}
		var self, leader *wipePeer
		for i, p := range peers {
			if p.Name == name {
				self = &peers[i]
			}
			if p.Leader {
				leader = &peers[i]
			}
		}
		switch {
		case self == nil:
			return fmt.Errorf("%s not in its own raft peers %+v", name, peers)
		case !self.Voter || (self.State != "follower" && self.State != "leader"):
			return fmt.Errorf("%s is %s, voter %t", name, self.State, self.Voter)
		case leader == nil:
			return fmt.Errorf("%s knows no leader: %+v", name, peers)
		case self.AppliedIndex < leader.AppliedIndex:
			return fmt.Errorf("%s applied index %d, leader %s at %d", name,
				self.AppliedIndex, leader.Name, leader.AppliedIndex)
		}
		return nil
	})
}

// checkStartedEmpty checks that name's log, since its last start, says
// Raft started without any state of its own.
func checkStartedEmpty(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	lines, err := c.GrepSinceStart(name, "existing_state=false")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Errorf("%s: no \"raft started ... existing_state=false\" in its log since its start", name)
	}
}

var copiedBytes = regexp.MustCompile(`bytes=(\d+)`)

// checkInstalled checks that name's log, since its last start, says it
// installed a snapshot from the leader, and returns the size Raft
// copied.
func checkInstalled(t *testing.T, c *cluster.Cluster, name string) int64 {
	t.Helper()
	installed, err := c.GrepSinceStart(name, installedLine)
	if err != nil {
		t.Fatal(err)
	}
	if len(installed) == 0 {
		t.Fatalf("%s: no %q in its log since its start: it did not catch up from a snapshot",
			name, installedLine)
	}
	copied, err := c.GrepSinceStart(name, copiedLine)
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, l := range copied {
		if m := copiedBytes.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			size = max(size, n)
		}
	}
	if size == 0 {
		t.Errorf("%s: no size in its %q lines %q", name, copiedLine, copied)
	}
	return size
}

// sameReplica waits until query gives the same answer on manager's own
// replica as on ref's (both saved with `snapshot save`, read with
// sqlite3) and returns it.
func sameReplica(t *testing.T, c *cluster.Cluster, manager, ref, dir, query string) string {
	t.Helper()
	var got string
	wait(t, 60*time.Second, manager+"'s replica holds what "+ref+"'s does", func() error {
		want, _, err := replicaQuery(c, ref, filepath.Join(dir, ref+".db"), query)
		if err != nil {
			return err
		}
		got, _, err = replicaQuery(c, manager, filepath.Join(dir, manager+".db"), query)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s's replica:\n%s\n%s's:\n%s", manager, trimLines(got), ref, trimLines(want))
		}
		return nil
	})
	return got
}

// replicaQuery saves manager's own replica to file with `snapshot save`,
// runs query on it with sqlite3 and returns the answer and the file's
// size.
func replicaQuery(c *cluster.Cluster, manager, file, query string) (string, int64, error) {
	size, err := saveReplica(c, manager, file)
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(file)
	out, err := sqliteQuery(file, query)
	return out, size, err
}

// saveReplica saves manager's own replica to file with `snapshot save`
// and returns its size.
func saveReplica(c *cluster.Cluster, manager, file string) (int64, error) {
	if out, err := c.CLIAt(manager, "snapshot", "save", file); err != nil {
		return 0, fmt.Errorf("snapshot save at %s: %w (output %q)", manager, err, out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// sqliteQuery runs query on file with sqlite3.
func sqliteQuery(file, query string) (string, error) {
	out, err := exec.Command("sqlite3", file, query).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sqlite3 %s: %w: %s", file, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// bigRestore runs `snapshot restore FILE` against manager, with more
// time than the harness gives a CLI command: the upload and the
// restore grow with the file.
func bigRestore(c *cluster.Cluster, manager, file string) ([]byte, error) {
	m, err := c.Member(manager)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, binary, "snapshot", "restore",
		"--addr", m.Addr(), file).CombinedOutput()
}

// trimLines keeps the first 20 lines of s, for an error message.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("... (%d lines)", len(lines)))
	}
	return strings.Join(lines, "\n")
}
