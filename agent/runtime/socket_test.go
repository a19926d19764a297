package runtime

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewContainerdBadSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.sock")
	tests := []struct {
		name   string
		socket string
		want   string
		is     error
	}{
		{name: "missing", socket: missing,
			want: "containerd socket " + missing + ": no such file or directory",
			is:   fs.ErrNotExist},
		{name: "not a socket", socket: file,
			want: "containerd socket " + file + ": not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := NewContainerd(Config{Socket: tt.socket})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want one wrapping %v", err, tt.is)
			}
			// containerd's dialer would wait for the socket until its
			// timeout; the check must not.
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %s, want an immediate failure", took)
			}
		})
	}
}

// TestNewContainerdNoDaemon: a socket left by a daemon that died fails
// within the connect timeout, with one prefix naming the socket.
func TestNewContainerdNoDaemon(t *testing.T) {
	dir, err := os.MkdirTemp("", "hm") // short: a socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "c.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	start := time.Now()
	_, err = NewContainerd(Config{Socket: path})
	if err == nil {
		t.Fatal("connected to a socket nobody listens on")
	}
	t.Logf("error: %v", err)
	prefix := "containerd " + path + ": "
	if !strings.HasPrefix(err.Error(), prefix) ||
		strings.Count(err.Error(), "containerd ") != 1 {
		t.Errorf("err = %q, want it to start with %q once", err, prefix)
	}
	if took := time.Since(start); took > connectTimeout+time.Second {
		t.Errorf("took %s, want at most the %s connect timeout", took, connectTimeout)
	}
}
