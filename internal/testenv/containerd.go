package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// ContainerdBinary is the daemon that StartContainerd runs.
const ContainerdBinary = "/usr/bin/containerd"

// namespacePrefix starts the containerd namespace of each daemon.
const namespacePrefix = "hivemind-"

// maxSocketPath is the longest unix socket path the kernel accepts
// (sun_path is 108 bytes, one of them the terminating NUL).
const maxSocketPath = 107

// ErrSocketPathTooLong is returned by StartContainerd when the directory
// is too deep for a unix socket path; use os.MkdirTemp("", "hm").
var ErrSocketPathTooLong = errors.New("unix socket path too long")

// Containerd is a containerd daemon of our own: its root, state, sockets
// and log all live under Dir. Stop it with Stop.
type Containerd struct {
	// Dir holds everything the daemon writes.
	Dir string
	// Socket is the gRPC socket to give to client.New or runtime.Config.
	Socket string
	// Namespace is the containerd namespace callers should use. It is
	// unique per Dir: runc keeps its state in /run/containerd/runc/<ns>/<id>
	// and cgroups are /<ns>/<id>, shared by every daemon on the machine,
	// so two daemons running containers of the same ID in the same
	// namespace would trample each other.
	Namespace string
	// LogPath is the daemon's stdout and stderr.
	LogPath string

	mu       sync.Mutex
	cmd      *exec.Cmd     // the running daemon
	exited   chan struct{} // closed when cmd has exited
	stopOnce sync.Once
	stopErr  error
}

// StartContainerd writes a config under dir (created if needed), starts
// /usr/bin/containerd with it and returns once the daemon answers a
// Version call (or after 30s with an error that includes its log's tail). dir must be short:
// the socket path dir+"/c.sock" must fit in 107 bytes. Needs root.
func StartContainerd(dir string) (*Containerd, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Containerd{
		Dir:       dir,
		Socket:    filepath.Join(dir, "c.sock"),
		Namespace: namespaceFor(dir),
		LogPath:   filepath.Join(dir, "containerd.log"),
	}
	if len(c.Socket)+len(".ttrpc") > maxSocketPath {
		return nil, fmt.Errorf("containerd socket %q: %w",
			c.Socket, ErrSocketPathTooLong)
	}

	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("containerd dir: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	err = os.WriteFile(cfgPath, []byte(c.config()), 0o644)
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	if err := c.launch(); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// launch starts the daemon on the config in Dir and waits until it
// answers.
func (c *Containerd) launch() error {
	logf, err := os.OpenFile(c.LogPath,
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("containerd log: %w", err)
	}
	defer logf.Close()

	cmd := exec.Command(ContainerdBinary,
		"--config", filepath.Join(c.Dir, "config.toml"))
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The daemon dies with the process that started it, so a crashed
	// test leaves no daemon behind (its shims may stay; see Stop).
	// Pdeathsig follows the starting OS thread, which Go keeps alive
	// unless a goroutine exits while locked to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()

	return c.waitReady(30 * time.Second)
}

// Restart kills the daemon with SIGKILL, as a crash would, and starts it
// again on the same directory. Running containers survive in their shims
// and the new daemon adopts them.
func (c *Containerd) Restart() error {
	cmd, exited := c.current()
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("containerd: sigkill: %w", err)
	}
	<-exited
	return c.launch()
}

func (c *Containerd) current() (*exec.Cmd, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd, c.exited
}

func namespaceFor(dir string) string {
	h := fnv.New32a()
	h.Write([]byte(dir))
	return fmt.Sprintf("%s%08x", namespacePrefix, h.Sum32())
}

// config is a containerd 1.6 config (schema version 2) that keeps every
// path under c.Dir and switches off the plugins a task runner does not
// need (CRI above all, which would want CNI and a sandbox image).
func (c *Containerd) config() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = %q
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`,
		filepath.Join(c.Dir, "root"),
		filepath.Join(c.Dir, "state"),
		c.Socket,
		c.Socket+".ttrpc",
		filepath.Join(c.Dir, "d.sock"),
		filepath.Join(c.Dir, "opt"),
	)
}

// waitReady polls the daemon's Version until it answers, it exits or the
// deadline passes.
func (c *Containerd) waitReady(timeout time.Duration) error {
	_, exited := c.current()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("containerd exited during start-up: %s",
				c.logTail())
		default:
		}
		if lastErr = c.ping(); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("containerd at %s not ready after %s: %w; log: %s",
		c.Socket, timeout, lastErr, c.logTail())
}

func (c *Containerd) ping() error {
	if _, err := os.Stat(c.Socket); err != nil {
		return err
	}
	cl, err := client.New(c.Socket, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cl.Version(ctx)
	return err
}

// logTail returns the last lines of the daemon's log, for error messages.
func (c *Containerd) logTail() string {
	b, err := os.ReadFile(c.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// Stop removes every container the daemon runs (in all namespaces),
// stops the daemon, kills shims left behind and unmounts whatever is still
// mounted under Dir, so that Dir can be removed. It does not remove Dir.
// Stop is idempotent; it returns the errors met on the way, joined.
func (c *Containerd) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Containerd) stop() error {
	var errs []error
	cmd, exited := c.current()
	select {
	case <-exited:
	default:
		if cmd == nil {
			break
		}
		errs = append(errs, c.removeContainers())
		errs = append(errs, stopDaemon(cmd, exited, 10*time.Second))
	}
	errs = append(errs, c.killShims())
	errs = append(errs, unmountUnder(c.Dir))
	return errors.Join(errs...)
}

// removeContainers kills and deletes every task and container, so their
// shims exit and their rootfs mounts go away while the daemon still runs.
func (c *Containerd) removeContainers() error {
	cl, err := client.New(c.Socket, client.WithTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("containerd %s: %w", c.Socket, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("containerd namespaces: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := cl.Containers(nctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ctr := range ctrs {
			errs = append(errs, removeContainer(nctx, ctr))
		}
	}
	return errors.Join(errs...)
}

func removeContainer(ctx context.Context, ctr client.Container) error {
	if task, err := ctr.Task(ctx, nil); err == nil {
		// WithProcessKill kills the init process (SIGKILL) and waits
		// for it before the task is deleted.
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			return fmt.Errorf("container %q: delete task: %w", ctr.ID(), err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("container %q: delete: %w", ctr.ID(), err)
	}
	return nil
}

// stopDaemon sends SIGTERM, then SIGKILL after timeout.
func stopDaemon(cmd *exec.Cmd, exited chan struct{}, timeout time.Duration) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("containerd: sigterm: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
	}
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("containerd: sigkill: %w", err)
	}
	<-exited
	return nil
}

// killShims kills the runc shims that were started by this daemon and are
// still alive (for instance when a container could not be deleted). A
// shim names its daemon's socket in its arguments ("-address <socket>").
func (c *Containerd) killShims() error {
	pids, err := shimPids(c.Socket)
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil &&
			!errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("shim %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

func shimPids(socket string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone already
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == socket {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

// unmountUnder lazily unmounts every mount point at or below dir, deepest
// first (overlay rootfs of tasks, the shims' bind mounts).
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()

	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}

	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		err := unix.Unmount(p, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) &&
			!errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes the octal escapes (\040 for a space, ...) of
// /proc/self/mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
