package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/hashicorp/go-hclog"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runcRuntime is the shim every container runs under.
const runcRuntime = "io.containerd.runc.v2"

// exitBuffer is how many exits wait for the agent before watchers block.
const exitBuffer = 256

// Containerd is the Runtime over a containerd daemon. Make it with
// NewContainerd; it is safe for concurrent use.
type Containerd struct {
	client      *client.Client
	ns          string
	snapshotter string
	insecure    map[string]bool
	logger      hclog.Logger

	// ctx lives until Close; it carries the namespace, and the watchers'
	// Wait calls run under it.
	ctx    context.Context
	cancel context.CancelFunc
	exits  chan Exit
	wg     sync.WaitGroup

	mu      sync.Mutex
	watched map[string]int // watcher goroutines per ID
	// retrying holds the IDs whose watcher lost its Wait call; lost
	// holds the exits that Stop saw for them (see waitExit).
	retrying map[string]bool
	lost     map[string]Exit
	closed   bool
}

var _ Runtime = (*Containerd)(nil)

// NewContainerd connects to the daemon at cfg.Socket, checks that it
// answers (within 10s) and picks the snapshotter. Empty Socket and
// Namespace take DefaultConfig's values.
func NewContainerd(cfg Config) (*Containerd, error) {
	def := DefaultConfig()
	if cfg.Socket == "" {
		cfg.Socket = def.Socket
	}
	if cfg.Namespace == "" {
		cfg.Namespace = def.Namespace
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}

	cl, err := client.New(cfg.Socket,
		client.WithDefaultNamespace(cfg.Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd %s: %w", cfg.Socket, err)
	}
	ctx, cancel := context.WithCancel(
		namespaces.WithNamespace(context.Background(), cfg.Namespace))
	r := &Containerd{
		client:   cl,
		ns:       cfg.Namespace,
		insecure: make(map[string]bool),
		logger:   logger,
		ctx:      ctx,
		cancel:   cancel,
		exits:    make(chan Exit, exitBuffer),
		watched:  make(map[string]int),
		retrying: make(map[string]bool),
		lost:     make(map[string]Exit),
	}
	for _, h := range cfg.InsecureRegistries {
		r.insecure[h] = true
	}

	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	v, err := cl.Version(pctx)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("containerd %s: %w", cfg.Socket, err)
	}
	r.snapshotter, err = r.pickSnapshotter(pctx, cfg.Snapshotter)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.logger.Info("connected to containerd", "socket", cfg.Socket,
		"version", v.Version, "namespace", cfg.Namespace,
		"snapshotter", r.snapshotter)
	return r, nil
}

// pickSnapshotter returns want, or when want is "" overlayfs if the daemon
// loaded its overlayfs plugin. containerd tries an overlay mount when it
// loads that plugin and records the failure on kernels or filesystems
// without overlay support (old kernels, some nested containers, a root on
// overlay or tmpfs without xattrs); native copies whole layers instead,
// slower and bigger but it works everywhere.
func (r *Containerd) pickSnapshotter(ctx context.Context, want string) (string, error) {
	if want != "" {
		return want, nil
	}
	resp, err := r.client.IntrospectionService().Plugins(ctx,
		"type==io.containerd.snapshotter.v1,id=="+SnapshotterOverlay)
	if err != nil {
		return "", fmt.Errorf("containerd plugins: %w", err)
	}
	for _, p := range resp.Plugins {
		if p.InitErr == nil {
			return SnapshotterOverlay, nil
		}
		r.logger.Warn("overlayfs snapshotter unavailable, using native",
			"reason", p.InitErr.Message)
		return SnapshotterNative, nil
	}
	r.logger.Warn("overlayfs snapshotter not loaded, using native")
	return SnapshotterNative, nil
}

// Exits implements Runtime.
func (r *Containerd) Exits() <-chan Exit { return r.exits }

// Close implements Runtime.
func (r *Containerd) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()

	r.cancel()
	r.wg.Wait()
	close(r.exits)
	return r.client.Close()
}

// opctx is ctx with our namespace, or ErrClosed after Close.
func (r *Containerd) opctx(ctx context.Context) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	return namespaces.WithNamespace(ctx, r.ns), nil
}

// normalize turns "web:v1" or "nginx" into the full reference containerd
// stores images under ("docker.io/library/nginx:latest").
func normalize(image string) (string, error) {
	ref, err := reference.ParseDockerRef(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	return ref.String(), nil
}

// plainHTTP tells whether a registry host is reached without TLS.
func (r *Containerd) plainHTTP(host string) (bool, error) {
	if r.insecure[host] {
		return true, nil
	}
	if h, _, err := net.SplitHostPort(host); err == nil && r.insecure[h] {
		return true, nil
	}
	if ip := net.ParseIP(hostOnly(host)); ip != nil && ip.IsLoopback() {
		return true, nil
	}
	return hostOnly(host) == "localhost", nil
}

func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// List implements Runtime.
func (r *Containerd) List(ctx context.Context) ([]Container, error) {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return nil, err
	}
	ctrs, err := r.client.Containers(ctx,
		fmt.Sprintf("labels.%q", TaskIDLabel))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}

	out := make([]Container, 0, len(ctrs))
	for _, ctr := range ctrs {
		c, err := describe(ctx, ctr)
		if errdefs.IsNotFound(err) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func describe(ctx context.Context, ctr client.Container) (Container, error) {
	info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, fmt.Errorf("container %q: %w", ctr.ID(), err)
	}
	c := Container{ID: ctr.ID(), Labels: info.Labels}

	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return c, nil
	}
	if err != nil {
		return Container{}, fmt.Errorf("container %q: task: %w", c.ID, err)
	}
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return c, nil
	}
	if err != nil {
		return Container{}, fmt.Errorf("container %q: status: %w", c.ID, err)
	}
	c.Pid = task.Pid()
	switch st.Status {
	case client.Running, client.Paused, client.Pausing:
		c.Running = true
	case client.Stopped:
		c.ExitCode = int(st.ExitStatus)
	}
	return c, nil
}

// Remove implements Runtime.
func (r *Containerd) Remove(ctx context.Context, id string) error {
	return r.Stop(ctx, id, 0)
}

// Stop implements Runtime. A timeout of 0 kills at once.
func (r *Containerd) Stop(ctx context.Context, id string, timeout time.Duration) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}

	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("container %q: task: %w", id, err)
	default:
		if err := r.stopTask(ctx, id, task, timeout); err != nil {
			return err
		}
		st, err := task.Delete(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %q: delete task: %w", id, err)
		}
		if st != nil {
			r.noteExit(id, st)
		}
	}

	err = ctr.Delete(ctx, client.WithSnapshotCleanup)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %q: delete: %w", id, err)
	}
	r.logger.Info("container removed", "task_id", id)
	return nil
}

// stopTask ends a task: SIGTERM to its init process, then after timeout
// SIGKILL to every process in it. It returns once the task has exited.
func (r *Containerd) stopTask(ctx context.Context, id string, task client.Task, timeout time.Duration) error {
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container %q: status: %w", id, err)
	}
	if st.Status == client.Stopped {
		return nil
	}

	// Wait before Kill so that the exit cannot slip between them.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited, err := task.Wait(wctx)
	if err != nil {
		return fmt.Errorf("container %q: wait: %w", id, err)
	}

	if timeout > 0 {
		if err := kill(ctx, task, syscall.SIGTERM); err != nil {
			return fmt.Errorf("container %q: sigterm: %w", id, err)
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("container %q: stop: %w", id, ctx.Err())
		case <-timer.C:
			r.logger.Warn("container ignored SIGTERM, killing",
				"task_id", id, "timeout", timeout)
		}
	}

	if err := kill(ctx, task, syscall.SIGKILL, client.WithKillAll); err != nil {
		return fmt.Errorf("container %q: sigkill: %w", id, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("container %q: kill: %w", id, ctx.Err())
	}
}

// kill signals a task; a task that is gone or already stopped is fine.
func kill(ctx context.Context, task client.Task, sig syscall.Signal, opts ...client.KillOpts) error {
	err := task.Kill(ctx, sig, opts...)
	if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return nil
	}
	return err
}

// Start implements Runtime.
func (r *Containerd) Start(ctx context.Context, s Spec) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	if r.exists(ctx, s.ID) {
		return fmt.Errorf("container %q: %w", s.ID, ErrExists)
	}
	img, err := r.image(ctx, s.Image)
	if err != nil {
		return fmt.Errorf("container %q: %w", s.ID, err)
	}

	ctr, err := r.create(ctx, img, s)
	if errdefs.IsAlreadyExists(err) && !r.exists(ctx, s.ID) {
		// No container has this ID, so the snapshot is a leftover of
		// one deleted without its snapshot: remove it and try again.
		r.logger.Warn("removing leftover snapshot", "task_id", s.ID)
		rerr := r.client.SnapshotService(r.snapshotter).Remove(ctx, s.ID)
		if rerr != nil && !errdefs.IsNotFound(rerr) {
			return fmt.Errorf("container %q: leftover snapshot: %w",
				s.ID, rerr)
		}
		ctr, err = r.create(ctx, img, s)
	}
	if errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("container %q: %w", s.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("container %q: create: %w", s.ID, err)
	}

	if err := r.startTask(ctx, ctr, s); err != nil {
		// Leave nothing half made behind: the agent retries with the
		// same ID, which must not then fail with ErrExists.
		cctx, cancel := context.WithTimeout(
			context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := ctr.Delete(cctx, client.WithSnapshotCleanup); derr != nil {
			r.logger.Warn("cleanup after failed start", "task_id", s.ID,
				"error", derr)
		}
		return err
	}
	r.logger.Info("container started", "task_id", s.ID, "image", s.Image)
	return nil
}

// exists tells whether a container has this ID. An error counts as
// "no": creating the container then fails with the real reason.
func (r *Containerd) exists(ctx context.Context, id string) bool {
	_, err := r.client.LoadContainer(ctx, id)
	return err == nil
}

// create makes the container record and its rootfs snapshot (key: the ID).
func (r *Containerd) create(ctx context.Context, img client.Image, s Spec) (client.Container, error) {
	return r.client.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithSnapshotter(r.snapshotter),
		client.WithNewSnapshot(s.ID, img),
		client.WithRuntime(runcRuntime, nil),
		client.WithNewSpec(specOpts(img, s)...),
		client.WithContainerLabels(labels(s)),
	)
}

// image returns a pulled image, unpacked into our snapshotter.
func (r *Containerd) image(ctx context.Context, image string) (client.Image, error) {
	ref, err := normalize(image)
	if err != nil {
		return nil, err
	}
	img, err := r.client.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %q: %w", image, ErrImageNotPulled)
	}
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	if !ok {
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return nil, fmt.Errorf("image %q: unpack: %w", image, err)
		}
	}
	return img, nil
}

func specOpts(img client.Image, s Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(s.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(s.Args...))
	}
	return append(opts,
		oci.WithEnv(s.Env),
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
		oci.WithHostResolvconf,
	)
}

func labels(s Spec) map[string]string {
	out := make(map[string]string, len(s.Labels)+1)
	for k, v := range s.Labels {
		out[k] = v
	}
	if _, ok := out[TaskIDLabel]; !ok {
		out[TaskIDLabel] = s.ID
	}
	return out
}

// startTask creates the task with its output in s.LogPath, starts it and
// hands its exit to a watcher. On error the task is gone again.
func (r *Containerd) startTask(ctx context.Context, ctr client.Container, s Spec) error {
	creator := cio.NullIO
	if s.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o755); err != nil {
			return fmt.Errorf("container %q: log: %w", s.ID, err)
		}
		creator = cio.LogFile(s.LogPath)
	}
	task, err := ctr.NewTask(ctx, creator)
	if err != nil {
		return fmt.Errorf("container %q: create task: %w", s.ID, err)
	}

	// Wait before Start: a task that exits at once must still be seen.
	wctx, cancel := context.WithCancel(r.ctx)
	exited, err := task.Wait(wctx)
	if err == nil {
		err = task.Start(ctx)
	}
	if err != nil {
		cancel()
		dctx, dcancel := context.WithTimeout(
			context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		if _, derr := task.Delete(dctx, client.WithProcessKill); derr != nil {
			r.logger.Warn("cleanup after failed start", "task_id", s.ID,
				"error", derr)
		}
		return fmt.Errorf("container %q: start: %w", s.ID, err)
	}

	// A watcher of an earlier container of this ID may still be
	// delivering its exit, so this one is counted, never refused.
	if _, err := r.track(s.ID, false); err != nil {
		cancel()
		return err
	}
	go r.report(s.ID, exited, cancel)
	return nil
}

// track counts a watcher goroutine for id. With onlyFirst it does not
// when id has one already, and returns false. ErrClosed after Close.
func (r *Containerd) track(id string, onlyFirst bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, ErrClosed
	}
	if onlyFirst && r.watched[id] > 0 {
		return false, nil
	}
	r.watched[id]++
	r.wg.Add(1)
	return true, nil
}

// untrack undoes track.
func (r *Containerd) untrack(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watched[id]--; r.watched[id] <= 0 {
		delete(r.watched, id)
	}
	r.wg.Done()
}

// Watch implements Runtime.
func (r *Containerd) Watch(ctx context.Context, id string) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	first, err := r.track(id, true)
	if err != nil || !first {
		return err
	}
	exited, cancel, err := r.wait(ctx, id)
	if err != nil {
		r.untrack(id)
		return err
	}
	r.logger.Info("watching container", "task_id", id)
	go r.report(id, exited, cancel)
	return nil
}

// wait starts a Wait, under r.ctx, on the task of an existing container.
func (r *Containerd) wait(ctx context.Context, id string) (<-chan client.ExitStatus, context.CancelFunc, error) {
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: %w", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("container %q: no task: %w",
			id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: task: %w", id, err)
	}
	wctx, cancel := context.WithCancel(r.ctx)
	exited, err := task.Wait(wctx)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("container %q: wait: %w", id, err)
	}
	return exited, cancel, nil
}

// report waits for a task's exit and sends it on Exits. When the Wait
// call breaks (containerd restarted) it waits again on the task, and
// reports UnknownExitCode if the task is gone by then.
func (r *Containerd) report(id string, exited <-chan client.ExitStatus, cancel context.CancelFunc) {
	defer r.untrack(id)

	e, ok := r.waitExit(id, exited, cancel)
	if !ok {
		return // closed
	}
	r.logger.Info("container exited", "task_id", id, "code", e.Code)
	select {
	case r.exits <- e:
	case <-r.ctx.Done():
	}
}

// waitExit returns the exit of id's task, false after Close. A Wait call
// breaks when containerd restarts; the task may exit, and Stop may even
// delete it, before a new Wait is in place. So while a watcher retries,
// Stop hands it the exit status it got from deleting the task (lost).
func (r *Containerd) waitExit(id string, exited <-chan client.ExitStatus, cancel context.CancelFunc) (Exit, bool) {
	defer r.setRetrying(id, false)
	for {
		st := <-exited
		cancel()
		if r.ctx.Err() != nil {
			return Exit{}, false
		}
		if st.Error() == nil {
			return exitOf(id, st), true
		}

		r.logger.Warn("waiting for container exit failed, retrying",
			"task_id", id, "error", st.Error())
		r.setRetrying(id, true)
		backoff := 100 * time.Millisecond
		for {
			select {
			case <-r.ctx.Done():
				return Exit{}, false
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)

			var err error
			exited, cancel, err = r.wait(r.ctx, id)
			if err == nil {
				break
			}
			if errors.Is(err, ErrNotFound) {
				return r.takeLost(id), true
			}
			r.logger.Debug("containerd still unreachable", "task_id", id,
				"error", err)
		}
	}
}

func exitOf(id string, st client.ExitStatus) Exit {
	at := st.ExitTime()
	if at.IsZero() {
		at = time.Now()
	}
	return Exit{ID: id, Code: int(st.ExitCode()), At: at}
}

func (r *Containerd) setRetrying(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.retrying[id] = true
		return
	}
	delete(r.retrying, id)
	delete(r.lost, id)
}

// noteExit keeps the status of a deleted task for a retrying watcher.
func (r *Containerd) noteExit(id string, st *client.ExitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retrying[id] {
		r.lost[id] = exitOf(id, *st)
	}
}

// takeLost returns the exit Stop saw for id, or one with UnknownExitCode.
func (r *Containerd) takeLost(id string) Exit {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.lost[id]; ok {
		delete(r.lost, id)
		return e
	}
	return Exit{ID: id, Code: UnknownExitCode, At: time.Now()}
}
