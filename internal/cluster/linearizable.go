package cluster

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// managerRPCPort is the gRPC port the harness starts managers with (the
// default: Start passes no --rpc-port).
const managerRPCPort = "7071"

// RPCAddr is the ip:port of a manager's gRPC API, for tests that call the
// Control service directly (rpc.Dial) instead of through the CLI.
func (m *Member) RPCAddr() string {
	return net.JoinHostPort(m.IP, managerRPCPort)
}

// CutOffManager partitions the manager name from every other manager,
// both ways: by address pair, and by group ID for the connections each
// side dials (see Firewall), so gids must name the group ID every
// manager runs under (GroupWrapper). Clients on 127.0.0.1, the test
// itself and the CLI, still reach every manager. Heal undoes it.
func (c *Cluster) CutOffManager(fw *Firewall, name string, gids map[string]int) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	if m.Role != "manager" {
		return fmt.Errorf("cut off %s: is a %s, not a manager", name, m.Role)
	}
	var errs []error
	for _, p := range c.Managers() {
		if p.Name == name {
			continue
		}
		gid, ok := gids[name]
		pgid, pok := gids[p.Name]
		if !ok || !pok {
			return fmt.Errorf("cut off %s from %s: no group ID for one of them in %v",
				name, p.Name, gids)
		}
		errs = append(errs,
			fw.DropBetween(m.IP, p.IP),
			fw.DropFromGroup(gid, p.IP),
			fw.DropFromGroup(pgid, m.IP))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.logf("cut manager %s off from the other managers", name)
	return nil
}

// Freeze stops a member's process with SIGSTOP, as a long pause (a
// stalled disk, an overloaded machine, a stop-the-world collection)
// would: it answers nothing and notices no time passing until Thaw.
// Connections to it stay open. The caller owns Thaw; Stop does not thaw.
func (c *Cluster) Freeze(name string) error {
	return c.signalMember(name, syscall.SIGSTOP, "froze")
}

// Thaw continues a process that Freeze stopped (SIGCONT).
func (c *Cluster) Thaw(name string) error {
	return c.signalMember(name, syscall.SIGCONT, "thawed")
}

func (c *Cluster) signalMember(name string, sig syscall.Signal, what string) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil || !c.Running(name) {
		return fmt.Errorf("%s %s: %w", what, name, ErrNotRunning)
	}
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		return fmt.Errorf("%s %s: %w", what, name, err)
	}
	c.logf("%s %s %s (%s)", what, m.Role, name, sig)
	return nil
}
