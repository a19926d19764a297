package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrDaemonRunning is returned by Resume while the daemon still runs.
var ErrDaemonRunning = errors.New("containerd still running")

// Halt stops the daemon and nothing else: sig is sent to the daemon
// alone (SIGTERM as `systemctl stop containerd` sends it with the
// unit's KillMode=process, SIGKILL as a crash), then SIGKILL after
// timeout, and Halt returns once it has exited. Its root, state and
// socket paths stay, and so do the shims, which hold the containers'
// processes: Resume starts a daemon that reconnects to them. Halting a
// daemon that has exited is not an error.
func (c *Containerd) Halt(sig syscall.Signal, timeout time.Duration) error {
	cmd, exited := c.current()
	select {
	case <-exited:
		return nil
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil &&
		!errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("containerd: %s: %w", sig, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
	}
	if err := cmd.Process.Kill(); err != nil &&
		!errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("containerd: sigkill after %s: %w", timeout, err)
	}
	<-exited
	return nil
}

// Resume starts the daemon again on the same directory after Halt and
// returns once it answers. ErrDaemonRunning if it runs.
func (c *Containerd) Resume() error {
	_, exited := c.current()
	select {
	case <-exited:
	default:
		return ErrDaemonRunning
	}
	return c.launch()
}

// Alive reports whether the daemon process runs.
func (c *Containerd) Alive() bool {
	_, exited := c.current()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// ShimPIDs lists the runc shims this daemon started that are alive,
// whether the daemon runs or not.
func (c *Containerd) ShimPIDs() ([]int, error) {
	return shimPids(c.Socket)
}

// InitPID reads the host PID of the init process of container id's
// task from the bundle the shim keeps in the daemon's state directory
// (runc writes it there at create), so it works while the daemon is
// down. The process may have exited since.
func (c *Containerd) InitPID(id string) (int, error) {
	path := filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task",
		c.Namespace, id, "init.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("container %q: init pid: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("container %q: init pid %q in %s: bad number",
			id, b, path)
	}
	return pid, nil
}

// ProcessAlive reports whether pid is a live process: it exists and is
// not a zombie waiting to be reaped.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold spaces or parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}
