package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/internal/testenv"
	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// env is one private containerd and one registry holding web:v1 and
// web:crash, the images every test here runs.
type env struct {
	ctrd   *testenv.Containerd
	reg    *testenv.Registry
	dir    string
	logger hclog.Logger
}

// newEnv starts the environment and stops it when the test ends. It needs
// root and /usr/bin/containerd; without them it skips, except in CI.
func newEnv(t *testing.T) *env {
	t.Helper()
	var missing string
	if os.Geteuid() != 0 {
		missing = "root"
	} else if _, err := os.Stat(testenv.ContainerdBinary); err != nil {
		missing = testenv.ContainerdBinary
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("these tests need %s, and CI must have it", missing)
		}
		t.Skipf("needs %s", missing)
	}

	// A short directory: containerd's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "hm")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, logger: testLogger(t)}
	t.Cleanup(func() {
		if e.ctrd != nil {
			if err := e.ctrd.Stop(); err != nil {
				t.Errorf("stop containerd: %v", err)
			}
		}
		if e.reg != nil {
			if err := e.reg.Close(); err != nil {
				t.Errorf("close registry: %v", err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})

	e.ctrd, err = testenv.StartContainerd(filepath.Join(dir, "c"))
	if err != nil {
		t.Fatal(err)
	}
	e.reg, err = testenv.StartRegistry("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]map[string]string{
		"web:v1":    nil,
		"web:crash": {"MODE": "crash-after=1s"},
		"web:stuck": {"MODE": "ignore-sigterm"},
	}
	for tag, extra := range images {
		img, err := testenv.BuildWebImage(strings.TrimPrefix(tag, "web:"), extra)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.reg.Push(tag, img); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// runtime connects a runtime to the environment's containerd; it is
// closed when the test ends.
func (e *env) runtime(t *testing.T) *runtime.Containerd {
	t.Helper()
	rt, err := runtime.NewContainerd(runtime.Config{
		Socket:    e.ctrd.Socket,
		Namespace: e.ctrd.Namespace,
		Logger:    e.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("close runtime: %v", err)
		}
	})
	return rt
}

// spec is a task of image tag serving HTTP on a free loopback port.
func (e *env) spec(t *testing.T, id, tag string) (runtime.Spec, string) {
	t.Helper()
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return runtime.Spec{
		ID:    id,
		Image: e.reg.Ref(tag),
		Env: []string{
			"HIVEMIND_ADDR_HTTP=" + addr,
			"HIVEMIND_TASK_ID=" + id,
		},
		Labels:  map[string]string{runtime.TaskIDLabel: id, "hivemind.app": "web"},
		LogPath: filepath.Join(e.dir, "logs", id+".log"),
	}, addr
}

func TestStartServeListStop(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:v1")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, addr := e.spec(t, "web-1", "web:v1")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}

	want := "VERSION=v1 TASK=web-1\n"
	testutil.WaitFor(t, 20*time.Second, func() error {
		body, err := get("http://" + addr + "/")
		if err != nil {
			return err
		}
		if body != want {
			return fmt.Errorf("GET / = %q, want %q", body, want)
		}
		return nil
	})

	ctrs, err := rt.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(ctrs) != 1 {
		t.Fatalf("list = %+v, want one container", ctrs)
	}
	c := ctrs[0]
	if c.ID != "web-1" || !c.Running || c.Pid == 0 ||
		c.Labels[runtime.TaskIDLabel] != "web-1" ||
		c.Labels["hivemind.app"] != "web" {
		t.Errorf("list = %+v, want web-1 running with a pid and its labels", c)
	}

	if err := rt.Start(ctx, s); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("second start: err = %v, want ErrExists", err)
	}

	if err := rt.Stop(ctx, "web-1", 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ctrs, err = rt.List(ctx)
	if err != nil {
		t.Fatalf("list after stop: %v", err)
	}
	if len(ctrs) != 0 {
		t.Errorf("list after stop = %+v, want none", ctrs)
	}

	// The server exits 0 on SIGTERM, and Stop's exit is reported too.
	ex := nextExit(t, rt, 10*time.Second)
	if ex.ID != "web-1" || ex.Code != 0 {
		t.Errorf("exit = %+v, want web-1 code 0", ex)
	}

	logs, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "listening on "+addr) {
		t.Errorf("log %s = %q, want the server's start line", s.LogPath, logs)
	}

	// Stopping and removing what is gone is not an error.
	if err := rt.Stop(ctx, "web-1", time.Second); err != nil {
		t.Errorf("stop of a removed container: %v", err)
	}
	if err := rt.Remove(ctx, "web-1"); err != nil {
		t.Errorf("remove of a removed container: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)

	tests := []struct {
		name  string
		image string
	}{
		{name: "missing tag", image: e.reg.Ref("web:nope")},
		{name: "missing repository", image: e.reg.Ref("nothing:v1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := rt.Pull(context.Background(), tt.image)
			t.Logf("pull %s: %v", tt.image, err)
			if !errors.Is(err, runtime.ErrImageNotFound) {
				t.Fatalf("pull %s: err = %v, want ErrImageNotFound", tt.image, err)
			}
			if err.Error() != "not found" {
				t.Errorf("pull %s: err = %q, want the registry's reason alone", tt.image, err)
			}
		})
	}
}

func TestStartNotPulled(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)

	s, _ := e.spec(t, "web-np", "web:v1")
	err := rt.Start(context.Background(), s)
	if !errors.Is(err, runtime.ErrImageNotPulled) {
		t.Fatalf("start: err = %v, want ErrImageNotPulled", err)
	}
	ctrs, err := rt.List(context.Background())
	if err != nil || len(ctrs) != 0 {
		t.Errorf("list = %+v, %v; want nothing left behind", ctrs, err)
	}
}

func TestCrashIsReported(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:crash")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, _ := e.spec(t, "web-crash", "web:crash")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}

	ex := nextExit(t, rt, 20*time.Second)
	if ex.ID != "web-crash" || ex.Code != 1 || ex.At.IsZero() {
		t.Errorf("exit = %+v, want web-crash code 1 with a time", ex)
	}

	ctrs, err := rt.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(ctrs) != 1 || ctrs[0].Running || ctrs[0].ExitCode != 1 {
		t.Errorf("list = %+v, want web-crash stopped with code 1", ctrs)
	}

	if err := rt.Remove(ctx, "web-crash"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if ctrs, err := rt.List(ctx); err != nil || len(ctrs) != 0 {
		t.Errorf("list after remove = %+v, %v; want none", ctrs, err)
	}
}

// TestAdoptAfterRestart is an agent restart: the container outlives the
// first runtime, and the second one finds it, watches it and kills it.
func TestAdoptAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	first, err := runtime.NewContainerd(runtime.Config{
		Socket:    e.ctrd.Socket,
		Namespace: e.ctrd.Namespace,
		Logger:    e.logger.Named("first"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Pull(ctx, e.reg.Ref("web:v1")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, addr := e.spec(t, "web-adopt", "web:v1")
	if err := first.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	rt := e.runtime(t)
	ctrs, err := rt.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(ctrs) != 1 || ctrs[0].ID != "web-adopt" || !ctrs[0].Running {
		t.Fatalf("list = %+v, want web-adopt running", ctrs)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		_, err := get("http://" + addr + "/")
		return err
	})

	if err := rt.Watch(ctx, "web-adopt"); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if err := rt.Watch(ctx, "web-adopt"); err != nil {
		t.Fatalf("second watch: %v", err)
	}
	if err := rt.Watch(ctx, "nothing"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("watch of a missing container: err = %v, want ErrNotFound", err)
	}

	if err := rt.Remove(ctx, "web-adopt"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	ex := nextExit(t, rt, 10*time.Second)
	if ex.ID != "web-adopt" || ex.Code != 137 {
		t.Errorf("exit = %+v, want web-adopt code 137 (SIGKILL)", ex)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:stuck")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, addr := e.spec(t, "web-stuck", "web:stuck")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		_, err := get("http://" + addr + "/")
		return err
	})

	const timeout = 500 * time.Millisecond
	start := time.Now()
	if err := rt.Stop(ctx, "web-stuck", timeout); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("stop took %s, want at least the %s timeout", took, timeout)
	}
	ex := nextExit(t, rt, 10*time.Second)
	if ex.ID != "web-stuck" || ex.Code != 137 {
		t.Errorf("exit = %+v, want web-stuck code 137 (SIGKILL)", ex)
	}
}

// TestStartOverLeftoverSnapshot: a container deleted without its snapshot
// must not block a new container of the same ID.
func TestStartOverLeftoverSnapshot(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:v1")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	cl, err := client.New(e.ctrd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	nctx := namespaces.WithNamespace(ctx, e.ctrd.Namespace)
	sn := cl.SnapshotService(runtime.SnapshotterOverlay)
	if _, err := sn.Prepare(nctx, "web-left", ""); err != nil {
		t.Fatalf("make leftover snapshot: %v", err)
	}

	s, addr := e.spec(t, "web-left", "web:v1")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		_, err := get("http://" + addr + "/")
		return err
	})
	if err := rt.Remove(ctx, "web-left"); err != nil {
		t.Fatalf("remove: %v", err)
	}
}

// TestWatchSurvivesContainerdRestart: a crash of containerd breaks the
// watcher's Wait; the watcher waits again on the restarted daemon, which
// has adopted the running container, and still reports the real exit.
func TestWatchSurvivesContainerdRestart(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:v1")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, addr := e.spec(t, "web-restart", "web:v1")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := e.ctrd.Restart(); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}

	testutil.WaitFor(t, 20*time.Second, func() error {
		ctrs, err := rt.List(ctx)
		if err != nil {
			return fmt.Errorf("list after restart: %w", err)
		}
		if len(ctrs) != 1 || !ctrs[0].Running {
			return fmt.Errorf("list after restart = %+v, want web-restart running", ctrs)
		}
		_, err = get("http://" + addr + "/")
		return err
	})
	if err := rt.Stop(ctx, "web-restart", 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ex := nextExit(t, rt, 10*time.Second)
	if ex.ID != "web-restart" || ex.Code != 0 {
		t.Errorf("exit = %+v, want web-restart code 0", ex)
	}
}

// TestContainerdStopCleansUp: stopping the private daemon with a task
// still running leaves no shim, container process or mount behind.
func TestContainerdStopCleansUp(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:stuck")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, _ := e.spec(t, "web-left-running", "web:stuck")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	ctrs, err := rt.List(ctx)
	if err != nil || len(ctrs) != 1 || ctrs[0].Pid == 0 {
		t.Fatalf("list = %+v, %v; want one running container", ctrs, err)
	}
	pid := ctrs[0].Pid
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}

	if err := e.ctrd.Stop(); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("container process %d still alive", pid)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), " "+e.dir+"/") {
		t.Errorf("mounts left under %s", e.dir)
	}
}

func nextExit(t *testing.T, rt runtime.Runtime, timeout time.Duration) runtime.Exit {
	t.Helper()
	select {
	case ex := <-rt.Exits():
		return ex
	case <-time.After(timeout):
		t.Fatalf("no exit reported within %s", timeout)
		return runtime.Exit{}
	}
}

func get(url string) (string, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  hclog.Debug,
		Output: testWriter{t},
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A container whose task is gone (its shim died, and containerd cleaned
// up after it) lists as not running with its exit code lost, not 0: the
// agent reports the task failed without inventing a clean exit.
func TestListTaskGoneExitUnknown(t *testing.T) {
	e := newEnv(t)
	rt := e.runtime(t)
	ctx := context.Background()

	if err := rt.Pull(ctx, e.reg.Ref("web:v1")); err != nil {
		t.Fatalf("pull: %v", err)
	}
	s, _ := e.spec(t, "web-gone", "web:v1")
	if err := rt.Start(ctx, s); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = rt.Remove(ctx, "web-gone") })

	// The task deleted behind the runtime's back, as containerd does
	// when the shim dies.
	cl, err := client.New(e.ctrd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	nctx := namespaces.WithNamespace(ctx, e.ctrd.Namespace)
	ctr, err := cl.LoadContainer(nctx, "web-gone")
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(nctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(nctx, client.WithProcessKill); err != nil {
		t.Fatalf("delete task: %v", err)
	}

	list, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.ID != "web-gone" {
			continue
		}
		if c.Running || c.ExitCode != runtime.UnknownExitCode {
			t.Fatalf("listed %+v, want not running with exit code %d (lost)",
				c, runtime.UnknownExitCode)
		}
		return
	}
	t.Fatalf("web-gone not listed: %+v", list)
}
