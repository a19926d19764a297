package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/raftnode"
)

func TestManagerSnapshotFlags(t *testing.T) {
	refused := []struct {
		name string
		args []string
		want string
	}{
		{"threshold 0", []string{"--snapshot-threshold", "0"}, "--snapshot-threshold must be at least 1"},
		{"interval 0", []string{"--snapshot-interval", "0s"}, "--snapshot-interval 0s must be positive"},
		{"retain 0", []string{"--snapshot-retain", "0"}, "--snapshot-retain 0 must be at least 1"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"manager", "--data-dir", t.TempDir(),
				"--log-level", "error"}, tc.args...)
			_, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("manager %v: %v, want %q", tc.args, err, tc.want)
			}
		})
	}

	t.Run("wired into the raft config", func(t *testing.T) {
		s := snapshotSettings{threshold: 100, interval: time.Second, retain: 5, trailingLogs: 7}
		if err := s.check(); err != nil {
			t.Fatalf("check: %v", err)
		}
		rc := raftnode.DefaultConfig()
		s.apply(&rc)
		if rc.SnapshotThreshold != 100 || rc.SnapshotInterval != time.Second ||
			rc.SnapshotRetain != 5 || rc.TrailingLogs != 7 {
			t.Fatalf("raft config threshold %d interval %s retain %d trailing logs %d, want 100 1s 5 7",
				rc.SnapshotThreshold, rc.SnapshotInterval, rc.SnapshotRetain, rc.TrailingLogs)
		}
	})

	t.Run("defaults are raftnode's", func(t *testing.T) {
		def := raftnode.DefaultConfig()
		got := map[string]string{}
		for _, f := range managerCommand().Flags {
			if strings.HasPrefix(f.Names()[0], "snapshot-") {
				got[f.Names()[0]] = f.String()
			}
		}
		for name, want := range map[string]string{
			"snapshot-threshold": "8192", "snapshot-interval": def.SnapshotInterval.String(),
			"snapshot-retain": "2", "snapshot-trailing-logs": "10240",
		} {
			if !strings.Contains(got[name], "(default: "+want+")") {
				t.Errorf("flag %s: %q, want default %s", name, got[name], want)
			}
		}
	})
}

func TestManagerDeadManagerCleanupFlag(t *testing.T) {
	t.Run("negative refused", func(t *testing.T) {
		_, err := run(t, "manager", "--data-dir", t.TempDir(), "--log-level", "error",
			"--dead-manager-cleanup", "-1s")
		want := "--dead-manager-cleanup -1s must not be negative"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("manager --dead-manager-cleanup -1s: %v, want %q", err, want)
		}
	})
	t.Run("default is raftnode's", func(t *testing.T) {
		want := "(default: " + raftnode.DefaultConfig().DeadServerCleanup.String() + ")"
		for _, f := range managerCommand().Flags {
			if f.Names()[0] == "dead-manager-cleanup" {
				if !strings.Contains(f.String(), want) {
					t.Fatalf("flag %q, want %s", f.String(), want)
				}
				return
			}
		}
		t.Fatal("no --dead-manager-cleanup flag")
	})
}

func TestManagerRaftMultiplierFlag(t *testing.T) {
	for _, v := range []string{"0", "11", "-2"} {
		t.Run("refused "+v, func(t *testing.T) {
			_, err := run(t, "manager", "--data-dir", t.TempDir(), "--log-level", "error",
				"--raft-multiplier", v)
			want := "--raft-multiplier " + v + " must be between 1 and 10"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("manager --raft-multiplier %s: %v, want %q", v, err, want)
			}
		})
	}
	t.Run("scales the timeouts", func(t *testing.T) {
		def := raftnode.DefaultConfig()
		rc := raftnode.DefaultConfig()
		scaleRaft(&rc, 3)
		if rc.HeartbeatTimeout != 3*def.HeartbeatTimeout ||
			rc.ElectionTimeout != 3*def.ElectionTimeout ||
			rc.LeaderLeaseTimeout != 3*def.LeaderLeaseTimeout ||
			rc.CommitTimeout != def.CommitTimeout {
			t.Fatalf("multiplier 3: heartbeat %s election %s lease %s commit %s; want %s %s %s %s",
				rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout, rc.CommitTimeout,
				3*def.HeartbeatTimeout, 3*def.ElectionTimeout, 3*def.LeaderLeaseTimeout, def.CommitTimeout)
		}
	})
}

// A node name goes into URLs, logs and Raft: odd ones are refused at
// start, for managers and workers alike.
func TestNodeNameFlag(t *testing.T) {
	for _, role := range []string{"manager", "worker"} {
		for _, name := range []string{"a b", "bad/name", "-lead", "x%y", strings.Repeat("n", 64)} {
			t.Run(role+" "+name, func(t *testing.T) {
				args := []string{role, "--data-dir", t.TempDir(), "--log-level", "error",
					"--name", name}
				if role == "worker" {
					args = append(args, "--join", "127.0.0.1", "--token", "HMW-x")
				}
				_, err := run(t, args...)
				want := role + ": --name " + fmt.Sprintf("%q", name) + ": want 1 to 63 letters"
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s --name %q: %v, want %q", role, name, err, want)
				}
			})
		}
	}
	for _, name := range []string{"m1", "edge-7.example_a", strings.Repeat("n", 63)} {
		if err := checkNodeName("worker", name); err != nil {
			t.Errorf("name %q refused: %v", name, err)
		}
	}
}
