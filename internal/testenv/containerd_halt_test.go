package testenv

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestContainerdHaltResume(t *testing.T) {
	dir, err := os.MkdirTemp("", "hm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c, err := StartContainerd(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})

	if err := c.Resume(); !errors.Is(err, ErrDaemonRunning) {
		t.Errorf("Resume of a running daemon: %v, want ErrDaemonRunning", err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := c.Halt(sig, 10*time.Second); err != nil {
			t.Fatalf("halt with %s: %v", sig, err)
		}
		if c.Alive() || c.ping() == nil {
			t.Fatalf("daemon answers after a halt with %s", sig)
		}
		if err := c.Halt(sig, time.Second); err != nil {
			t.Errorf("second halt: %v, want none", err)
		}
		if err := c.Resume(); err != nil {
			t.Fatalf("resume after a halt with %s: %v", sig, err)
		}
		if !c.Alive() {
			t.Fatalf("daemon not alive after resume")
		}
	}
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Errorf("this process is not alive")
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Exited but not yet waited for: a zombie is not alive.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) {
		t.Errorf("zombie %d counted alive", pid)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) {
		t.Errorf("reaped process %d counted alive", pid)
	}
}
