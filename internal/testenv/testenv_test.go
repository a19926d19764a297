package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

func TestWebServer(t *testing.T) {
	bin, err := webBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "web")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		mode       string
		wantHealth int
	}{
		{name: "healthy", mode: "", wantHealth: http.StatusOK},
		{name: "unhealthy", mode: "unhealthy", wantHealth: http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := freeAddr(t)
			p, err := StartProcess(filepath.Join(dir, tt.name+".log"), []string{
				"HIVEMIND_ADDR_HTTP=" + addr, "HIVEMIND_TASK_ID=t1",
				"VERSION=v7", "MODE=" + tt.mode,
			}, path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Kill() })

			testutil.WaitFor(t, 10*time.Second, func() error {
				code, body, err := get("http://" + addr + "/")
				if err != nil {
					return err
				}
				if code != 200 || body != "VERSION=v7 TASK=t1\n" {
					return fmt.Errorf("GET / = %d %q", code, body)
				}
				return nil
			})
			code, _, err := get("http://" + addr + "/healthz")
			if err != nil || code != tt.wantHealth {
				t.Errorf("GET /healthz = %d, %v; want %d", code, err, tt.wantHealth)
			}

			// SIGTERM: a graceful exit with status 0.
			if err := p.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(); err != nil {
				t.Errorf("exit after SIGTERM: %v, want status 0", err)
			}
		})
	}
}

func TestWebServerCrashAfter(t *testing.T) {
	bin, err := webBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := StartProcess(path+".log", []string{
		"HIVEMIND_ADDR_HTTP=" + freeAddr(t), "MODE=crash-after=200ms",
	}, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })

	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("web server still running 10s after crash-after=200ms")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
}

func TestProcessStopKillsAfterTimeout(t *testing.T) {
	// A shell that ignores SIGTERM: Stop must fall back to SIGKILL.
	dir := t.TempDir()
	p, err := StartProcess(filepath.Join(dir, "sh.log"), nil,
		"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(p.LogPath)
		if err != nil || !strings.Contains(string(b), "ready") {
			return fmt.Errorf("shell not ready yet (log %q, %v)", b, err)
		}
		return nil
	})
	if p.Pid() <= 0 {
		t.Errorf("pid = %d", p.Pid())
	}
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("wait status = %v, want killed by SIGKILL", ws)
	}
}

func TestRegistryPush(t *testing.T) {
	reg, err := StartRegistry("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Error(err)
		}
	})
	img, err := BuildWebImage("v3", map[string]string{"MODE": "unhealthy"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Push("web:v3", img); err != nil {
		t.Fatal(err)
	}

	ref, err := name.ParseReference(reg.Ref("web:v3"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("fetch pushed image: %v", err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/web"}) ||
		!slices.Equal(cf.Config.Env, []string{"VERSION=v3", "MODE=unhealthy"}) ||
		cf.OS != "linux" {
		t.Errorf("config = %+v, want entrypoint /web and env VERSION, MODE", cf.Config)
	}
	if _, err := remote.Image(mustRef(t, reg.Ref("web:nope"))); err == nil {
		t.Error("fetch of a missing tag succeeded")
	}
}

func TestStartContainerdRefusesLongPath(t *testing.T) {
	dir := "/tmp/" + strings.Repeat("x", 120)
	_, err := StartContainerd(dir)
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("err = %v, want ErrSocketPathTooLong", err)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func get(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
