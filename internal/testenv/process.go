package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a child process whose stdout and stderr go to a log file.
type Process struct {
	// LogPath is the file its output is appended to.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit error, set before done is closed
}

// StartProcess starts bin with args, appending its stdout and stderr to
// logPath (created if needed). env entries ("K=V") are added to the
// current environment. The child gets SIGKILL if this process dies.
func StartProcess(logPath string, env []string, bin string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath,
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("process %s: log: %w", bin, err)
	}
	defer logf.Close()

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("process %s: %w", bin, err)
	}

	p := &Process{LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Wait blocks until the process exits and returns its exit error (nil
// for status 0, an *exec.ExitError otherwise). It may be called often.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL and waits for the process to exit. Killing a process
// that has exited is not an error.
func (p *Process) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to timeout, then sends SIGKILL. It returns
// once the process has exited; how it exited is Wait's to tell.
func (p *Process) Stop(timeout time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	return p.Kill()
}

func (p *Process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := p.cmd.Process.Signal(sig)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("process %d: %s: %w", p.Pid(), sig, err)
	}
	return nil
}

// FreePort returns a TCP port that was free on ip a moment ago. Another
// process may take it before the caller does; tests accept that race.
func FreePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
