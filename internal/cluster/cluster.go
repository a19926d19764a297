package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hivemind-orch/hivemind/internal/testenv"
)

// Sentinel errors of the harness.
var (
	ErrUnknownNode = errors.New("unknown node")
	ErrNotRunning  = errors.New("not running")
	ErrNoLeader    = errors.New("no leader")
	ErrStopping    = errors.New("cluster stopping")
)

// Config says what Start builds. Zero fields take the defaults noted.
type Config struct {
	// Binary is the hivemind binary to run. Required.
	Binary string
	// Dir holds data directories, containerd state and logs. Default: a
	// new directory under os.TempDir, removed by Stop. It must be short,
	// for containerd's unix socket paths.
	Dir string
	// Managers is the number of managers, default 3.
	Managers int
	// Workers is the number of workers (0: none). Each gets its own
	// containerd.
	Workers int
	// Subnet is the third byte of the loopback addresses: managers run on
	// 127.0.Subnet.1..N and workers on 127.0.Subnet.11... Two clusters
	// with different subnets can run side by side. Default 0.
	Subnet int
	// Log receives the harness's progress lines. Default: discarded.
	Log io.Writer
	// Timeout bounds each start-up wait (a leader, a worker ready).
	// Default 60s.
	Timeout time.Duration
	// ManagerGap is the time between two managers' starts, and
	// ReverseStart starts them last to first: managers may be started in
	// any order. Default: all at once, first to last.
	ManagerGap   time.Duration
	ReverseStart bool
	// ManagerArgs and WorkerArgs are appended to every start command.
	ManagerArgs, WorkerArgs []string
	// KeepDir leaves Dir in place after Stop, for a post-mortem.
	KeepDir bool
}

// Web image versions pushed to the registry: v1 and v2 are healthy, v3's
// health check fails, v4 exits 1 four seconds after it starts.
var webImages = []struct {
	version string
	env     map[string]string
}{
	{"v1", nil},
	{"v2", nil},
	{"v3", map[string]string{"MODE": "unhealthy"}},
	{"v4", map[string]string{"MODE": "crash-after=4s"}},
}

// Cluster is a running Hivemind: managers, workers, their containerds and
// a registry. Its methods are safe for concurrent use.
type Cluster struct {
	// Dir is the run directory: one sub-directory and one log per node.
	Dir string
	// Registry serves the web images; see Image.
	Registry *testenv.Registry

	cfg       Config
	removeDir bool
	token     string

	mu       sync.Mutex
	managers []*Member
	workers  []*Member
	stopping bool
	stopOnce sync.Once
	stopErr  error
}

// Member is one manager or worker process of the cluster.
type Member struct {
	Name    string
	Role    string // "manager" or "worker"
	IP      string // its --bind address
	DataDir string
	LogPath string
	// Containerd is a worker's private containerd; nil for managers.
	Containerd *testenv.Containerd

	args []string
	proc *testenv.Process
}

// New prepares a cluster of cfg without starting anything, so that a
// program can hold it (and Stop it on a signal) while Start runs.
func New(cfg Config) (*Cluster, error) {
	if cfg.Binary == "" {
		return nil, errors.New("cluster: no hivemind binary")
	}
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		return nil, err
	}
	cfg.Binary = bin
	if cfg.Managers == 0 {
		cfg.Managers = 3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}

	c := &Cluster{cfg: cfg, Dir: cfg.Dir}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "hm")
		if err != nil {
			return nil, err
		}
		c.Dir = dir
		c.removeDir = !cfg.KeepDir
	}
	return c, nil
}

// Start builds the cluster of cfg: see Cluster.Start. On failure it stops
// what it started and the error carries the log tails.
func Start(cfg Config) (*Cluster, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		if serr := c.Stop(); serr != nil {
			c.logf("stop after failed start: %v", serr)
		}
		return nil, err
	}
	return c, nil
}

// Start starts the registry and its images, the managers (all at once, as
// a user may start them in any order), waits for a leader, gets the worker
// token, starts a containerd per worker and the workers, and waits until
// `node ls` shows them ready. On failure the error carries the log tails;
// the caller still owns Stop. Stop may run concurrently, from a signal
// handler: Start then fails.
func (c *Cluster) Start() error {
	if err := c.start(); err != nil {
		return fmt.Errorf("%w\n%s", err, c.Tails(30))
	}
	return nil
}

func (c *Cluster) start() error {
	t0 := time.Now()
	if err := c.startRegistry(); err != nil {
		return err
	}

	// Managers.
	for i := 1; i <= c.cfg.Managers; i++ {
		c.mu.Lock()
		c.managers = append(c.managers, c.newManager(i))
		c.mu.Unlock()
	}
	if err := c.checkPortsFree(); err != nil {
		return err
	}
	order := c.Managers()
	if c.cfg.ReverseStart {
		slices.Reverse(order)
	}
	for i, m := range order {
		if i > 0 && c.cfg.ManagerGap > 0 {
			time.Sleep(c.cfg.ManagerGap)
		}
		if err := c.startMember(m); err != nil {
			return err
		}
	}
	var leader string
	err := WaitFor(c.cfg.Timeout, func() error {
		if err := c.checkAlive(); err != nil {
			return err
		}
		l, err := c.Leader()
		leader = l
		return err
	})
	if err != nil {
		return err
	}
	c.logf("leader %s elected, %s after start", leader, since(t0))

	// Workers, each with its own containerd. The join token exists only
	// once the new leader's engine has written the cluster meta, a
	// moment after the election.
	err = WaitFor(10*time.Second, func() error {
		tok, err := c.CLI("cluster", "join-token", "worker")
		if err != nil {
			return fmt.Errorf("join token: %w", err)
		}
		c.token = strings.TrimSpace(string(tok))
		if c.token == "" {
			return errors.New("cluster join-token worker printed nothing")
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := 1; i <= c.cfg.Workers; i++ {
		if _, err := c.AddWorker(c.token); err != nil {
			return err
		}
	}
	for _, w := range c.Workers() {
		err := WaitFor(c.cfg.Timeout, func() error {
			if err := c.checkAlive(); err != nil {
				return err
			}
			return c.nodeStatus(w.Name, "ready")
		})
		if err != nil {
			return err
		}
	}
	c.logf("cluster of %d managers and %d workers up in %s",
		c.cfg.Managers, c.cfg.Workers, since(t0))
	return nil
}

// checkAlive is an error wrapping ErrAbort when a started member exited.
func (c *Cluster) checkAlive() error {
	for _, m := range append(c.Managers(), c.Workers()...) {
		c.mu.Lock()
		p := m.proc
		c.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%w: %s %s exited (%v): %s", ErrAbort,
				m.Role, m.Name, p.Wait(), Tail(m.LogPath, 1))
		default:
		}
	}
	return nil
}

// checkPortsFree fails when a port the managers or workers will bind is
// taken, most likely by another Hivemind on the same addresses.
func (c *Cluster) checkPortsFree() error {
	var addrs []string
	for i := 1; i <= c.cfg.Managers; i++ {
		for _, port := range []int{7070, 7071, 7072, 7073} {
			addrs = append(addrs, fmt.Sprintf("%s:%d", c.ip(i), port))
		}
	}
	for i := 1; i <= c.cfg.Workers; i++ {
		for _, port := range []int{7073, 7053} {
			addrs = append(addrs, fmt.Sprintf("%s:%d", c.ip(10+i), port))
		}
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is taken (another cluster on 127.0.%d.x? pick another Subnet): %w",
				a, c.cfg.Subnet, err)
		}
		ln.Close()
	}
	return nil
}

func (c *Cluster) startRegistry() error {
	reg, err := testenv.StartRegistry(c.ip(100) + ":0")
	if err != nil {
		return err
	}
	c.Registry = reg
	for _, im := range webImages {
		img, err := testenv.BuildWebImage(im.version, im.env)
		if err != nil {
			return err
		}
		if err := reg.Push("web:"+im.version, img); err != nil {
			return err
		}
	}
	c.logf("registry %s serves web:v1..v4", reg.Addr)
	return nil
}

// ip is the loopback address 127.0.<subnet>.<host>.
func (c *Cluster) ip(host int) string {
	return fmt.Sprintf("127.0.%d.%d", c.cfg.Subnet, host)
}

func (c *Cluster) joinList() string {
	ips := make([]string, c.cfg.Managers)
	for i := range ips {
		ips[i] = c.ip(i + 1)
	}
	return strings.Join(ips, ",")
}

func (c *Cluster) newManager(i int) *Member {
	m := &Member{
		Name: fmt.Sprintf("m%d", i),
		Role: "manager",
		IP:   c.ip(i),
	}
	m.DataDir = filepath.Join(c.Dir, m.Name)
	m.LogPath = filepath.Join(c.Dir, m.Name+".log")
	m.args = append([]string{"manager",
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--bind", m.IP,
		"--bootstrap-expect", fmt.Sprint(c.cfg.Managers),
		"--join", c.joinList(),
	}, c.cfg.ManagerArgs...)
	return m
}

func (c *Cluster) newWorker(i int, token string) (*Member, error) {
	w := &Member{
		Name: fmt.Sprintf("w%d", i),
		Role: "worker",
		IP:   c.ip(10 + i),
	}
	w.DataDir = filepath.Join(c.Dir, w.Name)
	w.LogPath = filepath.Join(c.Dir, w.Name+".log")
	if c.isStopping() {
		return nil, ErrStopping
	}
	ctd, err := testenv.StartContainerd(filepath.Join(c.Dir, "c"+w.Name))
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.Name, err)
	}
	if c.isStopping() {
		return nil, errors.Join(ErrStopping, ctd.Stop())
	}
	w.Containerd = ctd
	w.args = append([]string{"worker",
		"--name", w.Name,
		"--data-dir", w.DataDir,
		"--bind", w.IP,
		"--join", c.joinList(),
		"--token", token,
		"--containerd-socket", ctd.Socket,
		"--containerd-namespace", ctd.Namespace,
		"--insecure-registry", c.Registry.Addr,
	}, c.cfg.WorkerArgs...)
	return w, nil
}

// startMember starts m's process on its data dir, appending to its log.
func (c *Cluster) startMember(m *Member) error {
	if err := os.MkdirAll(m.DataDir, 0o755); err != nil {
		return err
	}
	// Each start is marked in the log, so restarts can be told apart.
	if f, err := os.OpenFile(m.LogPath,
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "=== harness: start %s at %s: hivemind %s\n",
			m.Name, time.Now().Format(time.RFC3339Nano),
			strings.Join(m.args, " "))
		f.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return ErrStopping
	}
	p, err := testenv.StartProcess(m.LogPath, nil, c.cfg.Binary, m.args...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", m.Role, m.Name, err)
	}
	m.proc = p
	c.logf("started %s %s on %s (pid %d)", m.Role, m.Name, m.IP, p.Pid())
	return nil
}

func (c *Cluster) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.cfg.Log, "%s cluster: %s\n",
		time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(time.Millisecond)
}

// AddManager starts one more manager, m4 and on, with the flags of the
// first ones and then args (a flag given again takes its last value):
// its data dir is new, so it finds the running cluster in gossip and
// waits to be added as a voter by the leader. It does not wait for that.
func (c *Cluster) AddManager(args ...string) (*Member, error) {
	c.mu.Lock()
	i := len(c.managers) + 1
	c.mu.Unlock()
	if i >= 10 {
		return nil, fmt.Errorf("add manager: at most 9 managers (workers start at .11)")
	}
	m := c.newManager(i)
	m.args = append(m.args, args...)
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return nil, ErrStopping
	}
	c.managers = append(c.managers, m)
	c.mu.Unlock()
	return m, c.startMember(m)
}

// AddWorker starts one more worker, with its own containerd, that joins
// with token. It does not wait for the worker to be ready: a test of a
// refused token waits for it to exit instead (see ExitErr).
func (c *Cluster) AddWorker(token string) (*Member, error) {
	c.mu.Lock()
	i := len(c.workers) + 1
	c.mu.Unlock()
	w, err := c.newWorker(i, token)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return nil, errors.Join(ErrStopping, w.Containerd.Stop())
	}
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w, c.startMember(w)
}
