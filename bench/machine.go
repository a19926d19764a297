package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/hivemind-orch/hivemind/internal/testenv"
)

// printMachine prints what the figures were measured on.
func printMachine(o *options, binary string) {
	fmt.Printf("date:        %s\n", time.Now().Format(time.RFC1123Z))
	fmt.Printf("command:     go run ./bench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("binary:      %s\n", binary)
	fmt.Printf("nproc:       %d\n", runtime.NumCPU())
	fmt.Printf("cpu:         %s\n", cpuModel())
	fmt.Printf("memory:      %s\n", firstLineOf("free", "-h"))
	fmt.Printf("kernel:      %s\n", firstLineOf("uname", "-r"))
	fmt.Printf("containerd:  %s\n", firstLineOf(testenv.ContainerdBinary, "--version"))
	fmt.Printf("load avg:    %s (1, 5, 15 min) at the start\n", loadAvg())
	fmt.Println()
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok &&
			strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// firstLineOf runs a command and returns its output: the "Mem:" line for
// free, else the first line.
func firstLineOf(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v", name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "Mem:") {
			return strings.Join(strings.Fields(l), " ") +
				" (total used free shared buff/cache available)"
		}
	}
	return lines[0]
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// measureCLI times `hivemind cluster status -o json` a few times: the cost
// a poll through the CLI would add, which is why the bench polls the HTTP
// API instead.
func (b *bench) measureCLI() {
	var xs []float64
	for range 5 {
		t0 := time.Now()
		if _, err := b.c.CLI("app", "ls", "-o", "json"); err != nil {
			b.say("measuring the CLI: %v", err)
			return
		}
		xs = append(xs, secs(time.Since(t0)))
	}
	s := summarize(xs)
	b.note("one `hivemind app ls -o json` (process start included) takes %.0f ms (median of 5, min %.0f, max %.0f); the bench polls the HTTP API it calls instead",
		s.median*1000, s.min*1000, s.max*1000)
}

// ctr runs `ctr --address SOCK -n NS ARGS` and returns its output.
func ctr(ctx context.Context, sock, ns string, args ...string) ([]byte, error) {
	full := append([]string{"--address", sock, "-n", ns}, args...)
	out, err := exec.CommandContext(ctx, "ctr", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %w: %s", strings.Join(full, " "), err,
			strings.TrimSpace(string(out)))
	}
	return out, nil
}

// prepull pulls web:v1 and web:v2 into every worker's containerd, in the
// worker's namespace and in the namespace of the ctr baseline, so that no
// measured start pulls an image.
func (b *bench) prepull() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, w := range b.c.Workers() {
		for _, ns := range []string{w.Containerd.Namespace, ctrNamespace} {
			for _, v := range []string{"v1", "v2"} {
				_, err := ctr(ctx, w.Containerd.Socket, ns,
					"images", "pull", "--plain-http", b.c.Image(v))
				if err != nil {
					return fmt.Errorf("pre-pull: %w", err)
				}
			}
		}
	}
	b.say("web:v1 and web:v2 pre-pulled into both workers' containerds")
	return nil
}
