// Package integration tests Hivemind end to end: real hivemind processes on
// loopback addresses, a private containerd per worker, a local registry and
// real containers. It needs root and containerd and runc installed (`make
// deps`); it fails rather than skips without them, as CI runs it as root.
package integration

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// shared is the cluster most tests use: 3 managers, 3 workers, started by
// the first test that asks for it (sharedCluster), so that a run of only
// the tests with clusters of their own does not start it. Tests on it use
// app names of their own and remove their apps when done, and every test
// that kills a node brings it back before it ends.
var (
	shared     *cluster.Cluster
	sharedErr  error
	sharedOnce sync.Once
)

// sharedCluster returns the shared cluster, starting it on first use, and
// fails t if it could not start.
func sharedCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		shared, sharedErr = cluster.Start(cluster.Config{
			Binary:   binary,
			Managers: 3,
			Workers:  3,
			Subnet:   sharedSubnet,
			Log:      harnessLog,
		})
		if sharedErr != nil {
			// Start has stopped what it started; keep the error for
			// every test that asks.
			shared = nil
		}
	})
	if sharedErr != nil {
		t.Fatalf("start the shared cluster: %v", sharedErr)
	}
	return shared
}

// Loopback subnets (127.0.N.x) of the clusters the tests start: not 0, so
// that a demo or a hand-started cluster on 127.0.0.x does not collide.
const (
	sharedSubnet  = 10
	fiveSubnet    = 11
	restartSubnet = 12
)

// binary is the hivemind binary built once for the whole run.
var binary string

// harnessLog receives the harness's progress lines: stderr with -v.
var harnessLog io.Writer = io.Discard

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration: must run as root (containerd runs the containers)")
		return 1
	}
	for _, tool := range []string{"/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/sqlite3"} {
		if _, err := os.Stat(tool); err != nil {
			fmt.Fprintf(os.Stderr, "integration: %s missing (run `make deps`): %v\n", tool, err)
			return 1
		}
	}
	if testing.Verbose() {
		harnessLog = os.Stderr
	}

	dir, err := os.MkdirTemp("", "hmbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "hivemind")
	t0 := time.Now()
	build := exec.Command("go", "build", "-o", binary, "github.com/hivemind-orch/hivemind/cmd/hivemind")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ./cmd/hivemind: %v\n%s", err, out)
		return 1
	}
	fmt.Fprintf(harnessLog, "built hivemind in %s\n", time.Since(t0).Round(time.Millisecond))

	code := m.Run()
	if shared != nil {
		if err := stopAll(shared); err != nil {
			fmt.Fprintln(os.Stderr, "integration: stop cluster:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// stopAll stops c and checks that no process, container or mount of it is
// left.
func stopAll(c *cluster.Cluster) error {
	if err := c.Stop(); err != nil {
		return err
	}
	left, err := c.Leftovers()
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind after Stop: %s", strings.Join(left, "; "))
	}
	return nil
}
