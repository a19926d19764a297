package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Stop stops everything Start started, containers included: it removes
// the apps while the cluster still runs (so workers stop their containers
// the way a user would see it), stops workers and managers, stops every
// containerd (which kills what is left and unmounts), closes the registry
// and removes the run directory unless KeepDir. Stop is idempotent and
// returns every error met, joined.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	t0 := time.Now()
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	var errs []error
	c.removeApps()

	for _, w := range c.Workers() {
		errs = append(errs, c.StopMember(w.Name, 5*time.Second))
	}
	for _, m := range c.Managers() {
		errs = append(errs, c.StopMember(m.Name, 5*time.Second))
	}
	for _, w := range c.Workers() {
		if w.Containerd != nil {
			errs = append(errs, w.Containerd.Stop())
		}
	}
	if c.Registry != nil {
		errs = append(errs, c.Registry.Close())
	}
	if c.removeDir {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	err := errors.Join(errs...)
	c.logf("stopped everything in %s (errors: %v)", since(t0), err)
	return err
}

// removeApps runs `app rm` for every app and waits a little for the
// workers to stop their containers. It is best effort: whatever is left
// is removed with the containerds.
func (c *Cluster) removeApps() {
	if len(c.Workers()) == 0 {
		return
	}
	apps, err := c.Apps()
	if err != nil {
		c.logf("stop: app ls: %v", err)
		return
	}
	for _, a := range apps {
		if _, err := c.CLI("app", "rm", a.Name); err != nil {
			c.logf("stop: app rm %s: %v", a.Name, err)
		}
	}
	err = WaitFor(15*time.Second, func() error {
		for _, w := range c.Workers() {
			if !c.Running(w.Name) {
				continue
			}
			ids, err := c.Containers(w.Name)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				return fmt.Errorf("%s still has containers %v", w.Name, ids)
			}
		}
		return nil
	})
	if err != nil {
		c.logf("stop: %v", err)
	}
}

// Leftovers lists what of the cluster still exists after Stop: processes
// whose command line names the run directory (daemons, shims) or whose
// root is inside it (containers), and mounts under it. Empty means Stop
// left nothing behind.
func (c *Cluster) Leftovers() ([]string, error) {
	var out []string
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		proc := filepath.Join("/proc", e.Name())
		cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
		if err != nil {
			continue // gone
		}
		args := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
		root, _ := os.Readlink(filepath.Join(proc, "root"))
		if strings.Contains(args, c.Dir) || within(root, c.Dir) {
			out = append(out, fmt.Sprintf("process %d: %s", pid, args))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && within(f[4], c.Dir) {
			out = append(out, "mount "+f[4])
		}
	}
	return out, nil
}

func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
