package cluster

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/hivemind-orch/hivemind/internal/testenv"
)

// Faults of one worker: its containerd stopped and started again on the
// same state, a container's process killed behind containerd's back, and
// the worker cut off from every other member.

// MemberGIDs returns a group ID per member of a cluster of the given
// size, base+i for manager mi and base+10+i for worker wi, for
// GroupWrapper: a Firewall can then tell apart the connections each
// member dials.
func MemberGIDs(managers, workers, base int) map[string]int {
	gids := make(map[string]int, managers+workers)
	for i := 1; i <= managers; i++ {
		gids[fmt.Sprintf("m%d", i)] = base + i
	}
	for i := 1; i <= workers; i++ {
		gids[fmt.Sprintf("w%d", i)] = base + 10 + i
	}
	return gids
}

// WorkerIP is the --bind address worker wi gets, known before Start.
func (c *Cluster) WorkerIP(i int) string { return c.ip(10 + i) }

// MarkDialed marks the connection-tracking entry of every connection a
// process of group gid dials to an address other than own, on each
// packet it sends, with gid as the mark, so that Isolate can drop what
// travels on those connections either way: a server's answers and the
// messages it pushes on a stream the process opened carry neither the
// process's address nor its owner (they go to 127.0.0.1, from the
// server). Call it before the process dials, i.e. before the cluster
// starts: a stream opened earlier and idle since would be marked only
// when the process next sends on it, and the server's first push would
// slip through.
func (f *Firewall) MarkDialed(gid int, own string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return iptables("-A", f.ownChain(), "-m", "owner", "--gid-owner", fmt.Sprint(gid),
		"!", "-d", own, "-j", "CONNMARK", "--set-mark", fmt.Sprint(gid))
}

// Cut isolates members from the others (see Isolate) with rules in a
// chain of its own, the Firewall's Chain+"-IN", jumped to from INPUT
// only, and in the Firewall's chains. Make it with NewCut.
type Cut struct {
	fw    *Firewall
	chain string
}

// NewCut creates the input chain of fw if it is missing, empties it (a
// run that died may have left rules) and jumps to it from INPUT. The
// caller owns Remove.
func NewCut(fw *Firewall) (*Cut, error) {
	cut := &Cut{fw: fw, chain: fw.Chain + "-IN"}
	if err := cut.create(); err != nil {
		return nil, err
	}
	return cut, nil
}

// Isolate cuts member name off from every other manager and worker,
// both ways, for gossip and gRPC alike, the way a network partition
// does: packets are lost on the way in, so their senders see no error
// and TCP backs off as it does on a real network (a drop on the way out
// fails the send at once, and TCP retries it every 500ms instead). It
// drops on the way in the packets between its address and theirs (UDP
// gossip, listeners' answers) and every packet of the connections it
// dialed (marked by MarkDialed, which must have run before the start),
// and on the way out the connections the others' processes open to its
// address (their group IDs). Every member must run under its own group
// ID of gids (GroupWrapper). The CLI, the test process and containerd
// are not members: they still reach everything, so a test can look at
// the cut-off member's containers and ask its tasks. cut.Heal undoes it.
func (c *Cluster) Isolate(cut *Cut, name string, gids map[string]int) error {
	m, err := c.Member(name)
	if err != nil {
		return err
	}
	gid, ok := gids[name]
	if !ok {
		return fmt.Errorf("isolate %s: no group ID", name)
	}
	errs := []error{iptables("-A", cut.chain, "-m", "connmark", "--mark", fmt.Sprint(gid), "-j", "DROP")}
	for _, o := range append(c.Managers(), c.Workers()...) {
		if o.Name == name {
			continue
		}
		og, ok := gids[o.Name]
		if !ok {
			return fmt.Errorf("isolate %s: %s has no group ID", name, o.Name)
		}
		errs = append(errs,
			iptables("-A", cut.chain, "-s", m.IP, "-d", o.IP, "-j", "DROP"),
			iptables("-A", cut.chain, "-s", o.IP, "-d", m.IP, "-j", "DROP"),
			cut.fw.DropFromGroup(og, m.IP))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.logf("isolated %s %s (%s) from every other member", m.Role, name, m.IP)
	return nil
}

// create makes the input chain, empty, and jumps to it from INPUT.
func (cut *Cut) create() error {
	cut.fw.mu.Lock()
	defer cut.fw.mu.Unlock()
	if !cut.fw.exists("-S", cut.chain) {
		if err := iptables("-N", cut.chain); err != nil {
			return err
		}
	}
	if err := iptables("-F", cut.chain); err != nil {
		return err
	}
	if cut.fw.exists("-C", "INPUT", "-j", cut.chain) {
		return nil
	}
	return iptables("-I", "INPUT", "-j", cut.chain)
}

// Heal lets every isolated member's traffic through again: it empties
// the input chain and the Firewall's chains (MarkDialed's marks
// included).
func (cut *Cut) Heal() error {
	cut.fw.mu.Lock()
	err := iptables("-F", cut.chain)
	cut.fw.mu.Unlock()
	return errors.Join(err, cut.fw.Heal())
}

// Rules lists the rules of the cut, as iptables -S prints them.
func (cut *Cut) Rules() string {
	out, err := exec.Command("iptables", "-w", "-S", cut.chain).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v", cut.chain, err)
	}
	return strings.TrimSpace(string(out)) + "\n" + cut.fw.Rules()
}

// Remove deletes the input chain and its jump; it is idempotent. The
// Firewall's own chains are the Firewall's to remove.
func (cut *Cut) Remove() error {
	cut.fw.mu.Lock()
	defer cut.fw.mu.Unlock()
	var errs []error
	for cut.fw.exists("-C", "INPUT", "-j", cut.chain) {
		if err := iptables("-D", "INPUT", "-j", cut.chain); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if cut.fw.exists("-S", cut.chain) {
		errs = append(errs, iptables("-F", cut.chain), iptables("-X", cut.chain))
	}
	return errors.Join(errs...)
}

// StopContainerd stops a worker's containerd with sig (SIGKILL after
// 10s), leaving its state and the shims that hold the containers'
// processes; StartContainerd starts it again. The worker is not
// touched.
func (c *Cluster) StopContainerd(worker string, sig syscall.Signal) error {
	ctd, err := c.containerd(worker)
	if err != nil {
		return err
	}
	if err := ctd.Halt(sig, 10*time.Second); err != nil {
		return fmt.Errorf("%s: %w", worker, err)
	}
	c.logf("stopped the containerd of %s (%s)", worker, sig)
	return nil
}

// StartContainerd starts a worker's containerd stopped by
// StopContainerd, on the same root, state and socket, and returns once
// it answers.
func (c *Cluster) StartContainerd(worker string) error {
	ctd, err := c.containerd(worker)
	if err != nil {
		return err
	}
	if c.isStopping() {
		return ErrStopping
	}
	t0 := time.Now()
	if err := ctd.Resume(); err != nil {
		return fmt.Errorf("%s: %w", worker, err)
	}
	c.logf("started the containerd of %s again (answers after %s)", worker, since(t0))
	return nil
}

// ShimPIDs lists the live runc shims of a worker's containerd, whether
// the daemon runs or not.
func (c *Cluster) ShimPIDs(worker string) ([]int, error) {
	ctd, err := c.containerd(worker)
	if err != nil {
		return nil, err
	}
	return ctd.ShimPIDs()
}

// InitPID is the host PID of the init process of a container of a
// worker, read from its bundle: it works while containerd is down.
func (c *Cluster) InitPID(worker, id string) (int, error) {
	ctd, err := c.containerd(worker)
	if err != nil {
		return 0, err
	}
	return ctd.InitPID(id)
}

// KillTask sends SIGKILL to the init process of a worker's container
// behind containerd's back, as the kernel's OOM killer or an operator
// would, and returns its PID once it is gone: its shim reaps it and
// keeps its exit status. It works while containerd is down.
func (c *Cluster) KillTask(worker, id string) (int, error) {
	pid, err := c.InitPID(worker, id)
	if err != nil {
		return 0, err
	}
	if !testenv.ProcessAlive(pid) {
		return pid, fmt.Errorf("container %q on %s: process %d is not alive", id, worker, pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return pid, fmt.Errorf("container %q on %s: kill %d: %w", id, worker, pid, err)
	}
	err = WaitFor(10*time.Second, func() error {
		if testenv.ProcessAlive(pid) {
			return fmt.Errorf("process %d of container %q still alive", pid, id)
		}
		return nil
	})
	if err != nil {
		return pid, err
	}
	c.logf("killed process %d of container %s on %s", pid, id, worker)
	return pid, nil
}

// TaskProc is a container's task as a worker's containerd reports it.
type TaskProc struct {
	ID string
	// Pid is the task's init process; Alive tells whether it still runs
	// on the host, whatever containerd says.
	Pid   uint32
	Alive bool
	// Status is containerd's: "running", "stopped", "created", ...
	Status     string
	ExitStatus uint32
}

// Running reports whether containerd says the task runs and its
// process is alive.
func (p TaskProc) Running() bool {
	return p.Status == string(client.Running) && p.Alive
}

// TaskProcs returns the task of every container of a worker's
// containerd that has one, by container ID. It fails while the daemon
// is down.
func (c *Cluster) TaskProcs(worker string) (map[string]TaskProc, error) {
	out := map[string]TaskProc{}
	err := c.withContainerd(worker, func(ctx context.Context, ctrs []client.Container) error {
		for _, ctr := range ctrs {
			task, err := ctr.Task(ctx, nil)
			if err != nil {
				continue // no task
			}
			st, err := task.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: container %q: status: %w", worker, ctr.ID(), err)
			}
			out[ctr.ID()] = TaskProc{
				ID:         ctr.ID(),
				Pid:        task.Pid(),
				Alive:      task.Pid() != 0 && testenv.ProcessAlive(int(task.Pid())),
				Status:     string(st.Status),
				ExitStatus: st.ExitStatus,
			}
		}
		return nil
	})
	return out, err
}

// RunningTasks returns, by worker, the IDs of the containers whose task
// runs with a live process, sorted: what the workers really run.
func (c *Cluster) RunningTasks() (map[string][]string, error) {
	out := map[string][]string{}
	for _, w := range c.Workers() {
		procs, err := c.TaskProcs(w.Name)
		if err != nil {
			return nil, err
		}
		var ids []string
		for id, p := range procs {
			if p.Running() {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		out[w.Name] = ids
	}
	return out, nil
}

func (c *Cluster) containerd(worker string) (*testenv.Containerd, error) {
	w, err := c.Member(worker)
	if err != nil {
		return nil, err
	}
	if w.Containerd == nil {
		return nil, fmt.Errorf("%s: no containerd", worker)
	}
	return w.Containerd, nil
}
