package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WipeManager kills a manager (SIGKILL, as a crash), removes its whole
// data dir and starts it again with the same name, address and flags:
// a manager that comes back with an empty disk. It returns once the
// process is started; it does not wait for the manager to catch up.
func (c *Cluster) WipeManager(name string) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	if m.Role != "manager" {
		return fmt.Errorf("wipe %s: a %s, not a manager", name, m.Role)
	}
	if c.Running(name) {
		if err := c.Kill(name); err != nil {
			return fmt.Errorf("wipe %s: %w", name, err)
		}
	}
	if err := c.Wipe(name); err != nil {
		return err
	}
	return c.Restart(name)
}

// Wipe removes the data dir of a member that is not running.
func (c *Cluster) Wipe(name string) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	if c.Running(name) {
		return fmt.Errorf("wipe %s: still running", name)
	}
	if err := os.RemoveAll(m.DataDir); err != nil {
		return fmt.Errorf("wipe %s: %w", name, err)
	}
	c.logf("removed the data dir of %s %s (%s)", m.Role, name, m.DataDir)
	return nil
}

// GrepSinceStart returns the lines of a member's log, since its last
// start by the harness, that contain s.
func (c *Cluster) GrepSinceStart(name, s string) ([]string, error) {
	m, err := c.Member(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		return nil, err
	}
	log := string(b)
	if i := strings.LastIndex(log, "=== harness: start "+name+" "); i >= 0 {
		log = log[i:]
	}
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out, nil
}

// SnapshotIndex returns the highest Raft index of the complete
// snapshots in a manager's data dir (raft/snapshots/TERM-INDEX-MS with
// its meta.json), 0 if there is none.
func (c *Cluster) SnapshotIndex(name string) (uint64, error) {
	m, err := c.Member(name)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(m.DataDir, "raft", "snapshots")
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var top uint64
	for _, e := range entries {
		parts := strings.Split(e.Name(), "-")
		if !e.IsDir() || len(parts) != 3 || strings.HasSuffix(e.Name(), ".tmp") {
			continue // not a snapshot, or one still being written
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err != nil {
			continue
		}
		idx, err := strconv.ParseUint(parts[1], 10, 64)
		if err == nil && idx > top {
			top = idx
		}
	}
	return top, nil
}
