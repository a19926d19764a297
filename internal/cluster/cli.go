package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// CLITimeout bounds one CLI command.
const CLITimeout = 20 * time.Second

// CLIError is a CLI command that exited non-zero.
type CLIError struct {
	Args     []string
	ExitCode int
	Stderr   string // what the command printed on stderr, trimmed
}

func (e *CLIError) Error() string {
	return fmt.Sprintf("hivemind %s: exit %d: %s",
		strings.Join(e.Args, " "), e.ExitCode, e.Stderr)
}

// CLI runs `hivemind ARGS` against a running manager (the first one in
// name order that runs) and returns its stdout.
func (c *Cluster) CLI(args ...string) ([]byte, error) {
	for _, m := range c.Managers() {
		if c.Running(m.Name) {
			return c.CLIAt(m.Name, args...)
		}
	}
	return nil, fmt.Errorf("hivemind %s: %w: no manager", strings.Join(args, " "), ErrNotRunning)
}

// CLIAt runs `hivemind ARGS` against the manager called manager, with
// --addr set to its HTTP API.
func (c *Cluster) CLIAt(manager string, args ...string) ([]byte, error) {
	m, err := c.Member(manager)
	if err != nil {
		return nil, err
	}
	full := withFlags(args, "--addr", m.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), CLITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.cfg.Binary, full...)
	cmd.Env = append(os.Environ(), "HIVEMIND_ADDR="+m.Addr())
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stdout.Bytes(), &CLIError{
			Args:     full,
			ExitCode: exit.ExitCode(),
			Stderr:   strings.TrimSpace(stderr.String()),
		}
	}
	if err != nil {
		return nil, fmt.Errorf("hivemind %s: %w", strings.Join(full, " "), err)
	}
	return stdout.Bytes(), nil
}

// withFlags puts flags right after the command words ("app status"),
// before the positional arguments, where urfave/cli parses a command's
// flags.
func withFlags(args []string, flags ...string) []string {
	n := 0
	if len(args) > 0 {
		n = 1
		switch args[0] {
		case "app", "node", "cluster", "snapshot", "raft":
			n = min(2, len(args))
		}
	}
	out := append([]string(nil), args[:n]...)
	out = append(out, flags...)
	return append(out, args[n:]...)
}

// JSON runs `hivemind ARGS -o json` against any running manager and
// decodes its output into v.
func (c *Cluster) JSON(v any, args ...string) error {
	out, err := c.CLI(withFlags(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("hivemind %s: output %q: %w",
			strings.Join(args, " "), trim(out), err)
	}
	return nil
}

// JSONAt is JSON against one manager.
func (c *Cluster) JSONAt(manager string, v any, args ...string) error {
	out, err := c.CLIAt(manager, withFlags(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("hivemind %s at %s: output %q: %w",
			strings.Join(args, " "), manager, trim(out), err)
	}
	return nil
}

// Status is `cluster status`.
func (c *Cluster) Status() (*ClusterStatus, error) {
	var st ClusterStatus
	return &st, c.JSON(&st, "cluster", "status")
}

// Nodes is `node ls`.
func (c *Cluster) Nodes() ([]Node, error) {
	var nodes []Node
	return nodes, c.JSON(&nodes, "node", "ls")
}

// Apps is `app ls`.
func (c *Cluster) Apps() ([]AppSummary, error) {
	var apps []AppSummary
	return apps, c.JSON(&apps, "app", "ls")
}

// AppStatus is `app status NAME`.
func (c *Cluster) AppStatus(name string) (*AppStatus, error) {
	var st AppStatus
	return &st, c.JSON(&st, "app", "status", name)
}

var specSeq atomic.Int64

// Deploy writes spec to a file in the run directory and runs
// `app deploy -f FILE` against any manager; it returns the output.
func (c *Cluster) Deploy(spec string) ([]byte, error) {
	path, err := c.writeSpec(spec)
	if err != nil {
		return nil, err
	}
	return c.CLI("app", "deploy", "-f", path)
}

// DeployAt is Deploy against one manager.
func (c *Cluster) DeployAt(manager, spec string) ([]byte, error) {
	path, err := c.writeSpec(spec)
	if err != nil {
		return nil, err
	}
	return c.CLIAt(manager, "app", "deploy", "-f", path)
}

func (c *Cluster) writeSpec(spec string) (string, error) {
	path := filepath.Join(c.Dir, fmt.Sprintf("spec-%d.yaml", specSeq.Add(1)))
	return path, os.WriteFile(path, []byte(spec), 0o644)
}

// Token is the worker join token the workers were started with.
func (c *Cluster) Token() string { return c.token }

// Image is the reference of the web image of version ("v1".."v4") in the
// cluster's registry.
func (c *Cluster) Image(version string) string {
	return c.Registry.Ref("web:" + version)
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
