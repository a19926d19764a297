package runtime

import (
	"context"
	"errors"
	"time"
)

// TaskIDLabel is the container label that marks a container as a task of
// ours; its value is the task ID. List returns only containers with it.
const TaskIDLabel = "hivemind.task-id"

// UnknownExitCode is the Exit.Code reported when a container's exit
// status was lost, for instance because its task vanished while
// containerd was unreachable.
const UnknownExitCode = -1

// Errors returned by the runtime, wrapped with the object they concern.
var (
	// ErrExists: Start of an ID that already has a container.
	ErrExists = errors.New("container already exists")
	// ErrNotFound: Watch of an ID without a container or task.
	ErrNotFound = errors.New("container not found")
	// ErrImageNotFound: the registry does not have the image.
	ErrImageNotFound = errors.New("image not found")
	// ErrImageNotPulled: Start of an image that was not pulled first.
	ErrImageNotPulled = errors.New("image not pulled")
	// ErrClosed: a call after Close.
	ErrClosed = errors.New("runtime closed")
	// ErrInvalidConfig: a Config that Validate refuses.
	ErrInvalidConfig = errors.New("invalid runtime config")
)

// Spec is what Start needs to run one task's container.
type Spec struct {
	// ID names the container (and its snapshot); the task ID.
	ID string
	// Image is the reference as in the app spec ("127.0.0.1:5000/web:v2");
	// it must have been pulled.
	Image string
	// Args replaces the image's entrypoint and cmd when non-empty.
	Args []string
	// Env ("K=V") is added to the image's environment, overriding it.
	Env []string
	// Labels go on the container. TaskIDLabel is set to ID when absent.
	Labels map[string]string
	// LogPath receives stdout and stderr (appended); "" discards them.
	LogPath string
}

// Container is a container as List sees it.
type Container struct {
	ID     string
	Labels map[string]string
	// Running is true while its task runs.
	Running bool
	// ExitCode is the code of a task that has exited, UnknownExitCode
	// for a container without a task, 0 while it runs.
	ExitCode int
	// Pid is the task's init process on the host, 0 without a task.
	Pid uint32
}

// Exit reports that a container's task has exited.
//
// Code is the code containerd reports: the process's exit status, or
// 128+signal for a process killed by a signal (the runc shim's
// convention, so 137 after SIGKILL and 143 after an unhandled SIGTERM),
// or UnknownExitCode when the status was lost.
type Exit struct {
	ID   string
	Code int
	At   time.Time
}

// Runtime runs task containers. *Containerd implements it; the agent's
// tests use a fake.
type Runtime interface {
	// Pull fetches an image and unpacks it for Start. The error's text
	// is the registry's reason without the image, which the caller
	// names ("not found"); it wraps ErrImageNotFound when the registry
	// has no such image.
	Pull(ctx context.Context, image string) error

	// Start creates and starts a container on the host network. It fails
	// with ErrExists if a container with that ID exists, and then
	// leaves it alone. The container's exit is reported on Exits.
	Start(ctx context.Context, s Spec) error

	// Stop sends SIGTERM, waits up to timeout for the task to exit,
	// sends SIGKILL, then deletes the task, the container and its
	// snapshot. A missing container is not an error.
	Stop(ctx context.Context, id string, timeout time.Duration) error

	// Remove kills (SIGKILL) and deletes the container whatever its
	// state. A missing container is not an error.
	Remove(ctx context.Context, id string) error

	// List returns the containers labelled TaskIDLabel, sorted by ID.
	List(ctx context.Context) ([]Container, error)

	// Exits delivers one Exit per task started or watched, including
	// the ones that Stop or Remove ended. It is closed by Close.
	Exits() <-chan Exit

	// Watch adopts a container found by List (after an agent restart):
	// its exit is then reported on Exits, at once if it has exited
	// already. Watching a watched container is a no-op. ErrNotFound if
	// it has no container or no task.
	Watch(ctx context.Context, id string) error

	// Close stops watching, closes Exits and the connection. The
	// containers keep running. Close is idempotent.
	Close() error
}
