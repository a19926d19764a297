package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LogPaths lists the log file of every process the cluster started:
// managers, workers and the workers' containerds.
func (c *Cluster) LogPaths() []string {
	var paths []string
	for _, m := range c.Managers() {
		paths = append(paths, m.LogPath)
	}
	for _, w := range c.Workers() {
		paths = append(paths, w.LogPath)
		if w.Containerd != nil {
			paths = append(paths, w.Containerd.LogPath)
		}
	}
	return paths
}

// Tails returns the last n lines of every log, each under a header naming
// its file, for a failure report.
func (c *Cluster) Tails(n int) string {
	var b strings.Builder
	for _, p := range c.LogPaths() {
		if strings.HasSuffix(p, "containerd.log") {
			// containerd logs every plugin it loads and every shim it
			// starts at info; only its warnings and errors tell.
			fmt.Fprintf(&b, "----- %s (last %d warnings and errors)\n", p, n)
			b.WriteString(tailMatching(p, n, "level=warning", "level=error"))
		} else {
			fmt.Fprintf(&b, "----- %s (last %d lines)\n", p, n)
			b.WriteString(Tail(p, n))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Tail returns the last n lines of the file at path, or why it could not
// be read.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Grep returns the lines of a member's log that contain s.
func (c *Cluster) Grep(name, s string) ([]string, error) {
	m, err := c.Member(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Clean(m.LogPath))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out, nil
}

// tailMatching is Tail of the lines that contain one of subs.
func tailMatching(path string, n int, subs ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				lines = append(lines, l)
				break
			}
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
