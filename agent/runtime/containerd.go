package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/hashicorp/go-hclog"
)

// runcRuntime is the shim every container runs under.
const runcRuntime = "io.containerd.runc.v2"

// exitBuffer is how many exits wait for the agent before watchers block.
const exitBuffer = 256

// connectTimeout bounds the first call to the daemon, and containerd's
// reconnect backoff. A daemon on a local socket answers in milliseconds;
// one that does not within this time is not coming.
const connectTimeout = 3 * time.Second

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
// answers (within connectTimeout) and picks the snapshotter. A socket
// that does not exist fails at once. Empty Socket and Namespace take
// DefaultConfig's values. Errors name the socket.
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

	// containerd's dialer waits for a missing socket to appear, until
	// the timeout: a wrong path would look like a daemon that hangs.
	if err := checkSocket(cfg.Socket); err != nil {
		return nil, err
	}
	cl, err := client.New(cfg.Socket,
		client.WithDefaultNamespace(cfg.Namespace),
		client.WithTimeout(connectTimeout))
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

	pctx, pcancel := context.WithTimeout(ctx, connectTimeout)
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

// checkSocket tells whether path is a unix socket, naming it in the
// error: "containerd socket /x.sock: no such file or directory".
func checkSocket(path string) error {
	fi, err := os.Stat(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if err != nil {
		return fmt.Errorf("containerd socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("containerd socket %s: not a socket", path)
	}
	return nil
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
