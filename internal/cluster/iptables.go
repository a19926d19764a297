package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Network faults between members on loopback addresses, with iptables.
//
// Addresses alone do not tell the members' traffic apart: a connection a
// member dials leaves from 127.0.0.1 (the kernel's source for every
// 127.x destination), not from its --bind address, and workers dial the
// same way. Only what a member sends from a bound socket (gossip over UDP,
// the answers of its listeners) carries its address. So a Firewall drops
// by address pair and, for dialed connections, by the group ID of the
// process that owns the socket: GroupWrapper runs chosen members under
// group IDs of their own, and DropFromGroup drops what a process of that
// group sends to an address.

// ErrIPTables wraps a failed iptables command.
var ErrIPTables = errors.New("iptables")

// Firewall is a pair of filter-table chains of a test's own: Chain, jumped
// to from INPUT and OUTPUT, holds address rules, and Chain+"-OWN", jumped
// to from OUTPUT only (the owner match is valid nowhere else), holds group
// rules. It touches no other rule of the machine. Its methods are safe for
// concurrent use.
type Firewall struct {
	// Chain is the name of the address chain, e.g. "HM-TEST-15".
	Chain string

	mu sync.Mutex
}

// NewFirewall creates the chains named after chain if they are missing,
// empties them (a previous run that died may have left rules), and jumps
// to them once from INPUT and OUTPUT. The caller owns Remove.
func NewFirewall(chain string) (*Firewall, error) {
	if chain == "" || len(chain) > 24 {
		return nil, fmt.Errorf("%w: chain %q: want 1 to 24 characters", ErrIPTables, chain)
	}
	f := &Firewall{Chain: chain}
	for _, ch := range []string{f.Chain, f.ownChain()} {
		if !f.exists("-S", ch) {
			if err := iptables("-N", ch); err != nil {
				return nil, err
			}
		}
		if err := iptables("-F", ch); err != nil {
			return nil, err
		}
	}
	for _, j := range f.jumps() {
		if f.exists(append([]string{"-C"}, j...)...) {
			continue
		}
		if err := iptables(append([]string{"-I"}, j...)...); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *Firewall) ownChain() string { return f.Chain + "-OWN" }

// jumps are the rules, without the command, that send packets to the
// chains.
func (f *Firewall) jumps() [][]string {
	return [][]string{
		{"INPUT", "-j", f.Chain},
		{"OUTPUT", "-j", f.Chain},
		{"OUTPUT", "-j", f.ownChain()},
	}
}

// exists runs an iptables check command (-C, -S) and reports whether it
// succeeded.
func (f *Firewall) exists(args ...string) bool {
	return exec.Command("iptables", append([]string{"-w"}, args...)...).Run() == nil
}

// DropBetween drops every packet from address a to address b and from b
// to a, all protocols and ports.
func (f *Firewall) DropBetween(a, b string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range [][2]string{{a, b}, {b, a}} {
		if err := iptables("-A", f.Chain, "-s", p[0], "-d", p[1], "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// DropFromGroup drops every packet that a socket of a process running
// with group ID gid sends to address dst, whatever its source address:
// the connections such a process dials included.
func (f *Firewall) DropFromGroup(gid int, dst string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return iptables("-A", f.ownChain(), "-m", "owner", "--gid-owner", fmt.Sprint(gid),
		"-d", dst, "-j", "DROP")
}

// Heal empties the chains: traffic flows again.
func (f *Firewall) Heal() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(iptables("-F", f.Chain), iptables("-F", f.ownChain()))
}

// Rules lists the chains' rules as iptables -S prints them, for a log.
func (f *Firewall) Rules() string {
	var b strings.Builder
	for _, ch := range []string{f.Chain, f.ownChain()} {
		out, err := exec.Command("iptables", "-w", "-S", ch).CombinedOutput()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", ch, err)
		}
		b.Write(out)
	}
	return strings.TrimSpace(b.String())
}

// Remove deletes the jumps and the chains. It is idempotent: what is
// already gone is no error.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, j := range f.jumps() {
		for f.exists(append([]string{"-C"}, j...)...) {
			if err := iptables(append([]string{"-D"}, j...)...); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	for _, ch := range []string{f.Chain, f.ownChain()} {
		if !f.exists("-S", ch) {
			continue
		}
		errs = append(errs, iptables("-F", ch), iptables("-X", ch))
	}
	return errors.Join(errs...)
}

// iptables runs `iptables -w ARGS`; -w waits for the xtables lock that
// another test or CI job may hold.
func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w %s: %w: %s", ErrIPTables, strings.Join(args, " "), err,
			strings.TrimSpace(string(out)))
	}
	return nil
}

// GroupWrapper writes an executable script into dir that runs binary with
// the arguments it is given, and returns its path, for Config.Binary. A
// `manager` or `worker` command whose --name is a key of gids runs under
// that group ID (setpriv, still as root), so that DropFromGroup can match
// its sockets; everything else, the CLI included, runs as is. The process
// ID stays the same: the script and setpriv exec. The kernel forgets the
// parent-death signal the harness sets when the group changes, so setpriv
// sets SIGKILL again: a member still dies with the test process.
func GroupWrapper(dir, binary string, gids map[string]int) (string, error) {
	bin, err := filepath.Abs(binary)
	if err != nil {
		return "", err
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", fmt.Errorf("group wrapper: setpriv (util-linux): %w", err)
	}
	names := make([]string, 0, len(gids))
	for name := range gids {
		names = append(names, name)
	}
	sort.Strings(names)

	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# cluster.GroupWrapper: hivemind, with some members under group IDs of their own.\n")
	b.WriteString("name=\nprev=\nfor a in \"$@\"; do\n")
	b.WriteString("\tif [ \"$prev\" = --name ]; then name=$a; fi\n\tprev=$a\ndone\n")
	b.WriteString("case \"$1\" in\nmanager|worker)\n\tcase \"$name\" in\n")
	for _, name := range names {
		fmt.Fprintf(&b, "\t%s) exec %s --regid=%d --clear-groups --pdeathsig SIGKILL -- %s \"$@\" ;;\n",
			shellQuote(name), shellQuote(setpriv), gids[name], shellQuote(bin))
	}
	b.WriteString("\tesac\n\t;;\nesac\n")
	fmt.Fprintf(&b, "exec %s \"$@\"\n", shellQuote(bin))

	path := filepath.Join(dir, "hivemind-grouped")
	if err := os.WriteFile(path, []byte(b.String()), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
