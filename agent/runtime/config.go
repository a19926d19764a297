package runtime

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// Snapshotter names accepted in Config.Snapshotter.
const (
	SnapshotterOverlay = "overlayfs"
	SnapshotterNative  = "native"
)

// Config configures NewContainerd.
type Config struct {
	// Socket is containerd's gRPC socket. Default
	// /run/containerd/containerd.sock.
	Socket string
	// Namespace is the containerd namespace of our containers and
	// images. Default "hivemind".
	Namespace string
	// InsecureRegistries are registry hosts ("host" or "host:port")
	// reached over plain HTTP. localhost and loopback IPs always are.
	InsecureRegistries []string
	// Snapshotter is "overlayfs", "native" or "" to pick overlayfs when
	// the daemon has it working, else native.
	Snapshotter string
	// Logger gets the runtime's logs (keys task_id, image); the caller
	// names it. nil discards them.
	// TODO: containerd's client still logs through logrus to stderr
	// (e.g. "fetch failed after status: 404"); route it here.
	Logger hclog.Logger
}

// DefaultConfig returns the settings for a worker on a machine whose
// containerd runs at its usual place.
func DefaultConfig() Config {
	return Config{
		Socket:    "/run/containerd/containerd.sock",
		Namespace: "hivemind",
	}
}

// Validate checks the fields; it wraps ErrInvalidConfig.
func (c Config) Validate() error {
	if c.Socket == "" {
		return fmt.Errorf("%w: socket is empty", ErrInvalidConfig)
	}
	if c.Namespace == "" {
		return fmt.Errorf("%w: namespace is empty", ErrInvalidConfig)
	}
	switch c.Snapshotter {
	case "", SnapshotterOverlay, SnapshotterNative:
	default:
		return fmt.Errorf("%w: snapshotter %q is not %q or %q",
			ErrInvalidConfig, c.Snapshotter,
			SnapshotterOverlay, SnapshotterNative)
	}
	return nil
}
