package cluster

import (
	"errors"
	"fmt"
	"os"
)

// ReplaceManagers stages the loss of every manager and a new control
// plane in its place, as an operator recovering from a disaster would
// start one: it kills every manager (kill -9), deletes their data
// directories, and starts managers again under the same names, on the
// same addresses and with the same flags, on empty data directories. They
// bootstrap a new cluster, with a cluster ID and join tokens of its own.
// The workers and their containerds are left running, untouched. It does
// not wait for the new cluster's leader (WaitLeader does).
func (c *Cluster) ReplaceManagers() error {
	var errs []error
	for _, m := range c.Managers() {
		if c.Running(m.Name) {
			errs = append(errs, c.Kill(m.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, m := range c.Managers() {
		if err := os.RemoveAll(m.DataDir); err != nil {
			return fmt.Errorf("manager %s: wipe data dir: %w", m.Name, err)
		}
	}
	c.logf("every manager killed and its data dir deleted")
	for _, m := range c.Managers() {
		if err := c.startMember(m); err != nil {
			return err
		}
	}
	return nil
}

// MemberPID is the process ID of a running manager or worker: the same
// PID before and after a fault means the process was not restarted.
func (c *Cluster) MemberPID(name string) (int, error) {
	m, err := c.Member(name)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil || !c.Running(name) {
		return 0, fmt.Errorf("%s: %w", name, ErrNotRunning)
	}
	return p.Pid(), nil
}
