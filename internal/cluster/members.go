package cluster

import (
	"fmt"
	"time"
)

// Managers returns the managers, running or not, in name order.
func (c *Cluster) Managers() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.managers...)
}

// Workers returns the workers, running or not, in name order.
func (c *Cluster) Workers() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.workers...)
}

// Member returns the manager or worker called name.
func (c *Cluster) Member(name string) (*Member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range append(append([]*Member(nil), c.managers...), c.workers...) {
		if m.Name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownNode, name)
}

// Running reports whether the member's process is alive.
func (c *Cluster) Running(name string) bool {
	m, err := c.Member(name)
	if err != nil {
		return false
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

// Addr is the HTTP API address of a manager, as --addr takes it.
func (m *Member) Addr() string {
	return "http://" + m.IP + ":7070"
}

// Kill sends SIGKILL to a manager or worker and waits for it to exit.
// A worker's containerd and containers stay up, as after a crash.
func (c *Cluster) Kill(name string) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s: %w", name, ErrNotRunning)
	}
	if err := p.Kill(); err != nil {
		return err
	}
	c.logf("killed %s %s (kill -9)", m.Role, name)
	return nil
}

// KillManager is Kill for a manager, the leader's failover in tests.
func (c *Cluster) KillManager(name string) error { return c.Kill(name) }

// StopMember sends SIGTERM to a manager or worker, then SIGKILL after
// timeout, and waits for it to exit.
func (c *Cluster) StopMember(name string, timeout time.Duration) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Stop(timeout); err != nil {
		return err
	}
	c.logf("stopped %s %s", m.Role, name)
	return nil
}

// Restart starts a manager or worker that is not running again, on its
// data dir with its original flags.
func (c *Cluster) Restart(name string) error {
	if c.Running(name) {
		return fmt.Errorf("%s: still running", name)
	}
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	return c.startMember(m)
}

// ExitErr waits up to timeout for a member to exit and returns how it did:
// nil for status 0, else the exit error.
func (c *Cluster) ExitErr(name string, timeout time.Duration) (exited bool, err error) {
	m, err := c.Member(name)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		return false, fmt.Errorf("%s: %w", name, ErrNotRunning)
	}
	select {
	case <-p.Exited():
		return true, p.Wait()
	case <-time.After(timeout):
		return false, nil
	}
}

// Leader asks a running manager for the cluster status and returns the
// leader's name. It fails when none is known, or when the one named is not
// running (followers remember a killed leader until they elect another).
func (c *Cluster) Leader() (string, error) {
	st, err := c.Status()
	if err != nil {
		return "", err
	}
	if st.Leader == "" {
		return "", ErrNoLeader
	}
	if m, err := c.Member(st.Leader); err == nil && m.Role == "manager" &&
		!c.Running(st.Leader) {
		return "", fmt.Errorf("%w: %s is named leader but is down", ErrNoLeader, st.Leader)
	}
	return st.Leader, nil
}

// WaitLeader waits for Leader to name a running manager.
func (c *Cluster) WaitLeader(timeout time.Duration) (string, error) {
	var leader string
	err := WaitFor(timeout, func() error {
		l, err := c.Leader()
		leader = l
		return err
	})
	return leader, err
}

// WaitNodeStatus waits until `node ls` shows node with status.
func (c *Cluster) WaitNodeStatus(node, status string, timeout time.Duration) error {
	return WaitFor(timeout, func() error { return c.nodeStatus(node, status) })
}

// nodeStatus is an error unless `node ls` shows node with status.
func (c *Cluster) nodeStatus(node, status string) error {
	nodes, err := c.Nodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Name == node {
			if n.Status != status {
				return fmt.Errorf("node %s is %q, want %q", node, n.Status, status)
			}
			return nil
		}
	}
	return fmt.Errorf("node %s not in node ls", node)
}
