package gossip

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/internal/testutil"
)

// lockedBuffer collects log output written from memberlist's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// TestLogNamesNodeOnce: every line of a pool names its node once,
// whether the caller's logger attached node or not.
func TestLogNamesNodeOnce(t *testing.T) {
	tests := []struct {
		name   string
		logger func(hclog.Logger) hclog.Logger
	}{
		{name: "caller attaches node",
			logger: func(l hclog.Logger) hclog.Logger { return l.With("node", "n1") }},
		{name: "caller does not",
			logger: func(l hclog.Logger) hclog.Logger { return l }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out lockedBuffer
			root := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: &out})
			p, err := New(Config{
				Name: "n1", BindAddr: "127.0.0.1",
				Meta:   Meta{Role: "worker", Address: "127.0.0.1"},
				Logger: tt.logger(root),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Shutdown()
			other := startPool(t, "n2")
			if _, err := p.Join([]string{other.Addr()}); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 5*time.Second, func() error {
				if !strings.Contains(strings.Join(out.lines(), "\n"), "member=n2") {
					return fmt.Errorf("no line names member n2 yet")
				}
				return nil
			})

			for _, line := range out.lines() {
				t.Log(line)
				if n := strings.Count(line, "node=n1"); n != 1 ||
					strings.Count(line, "node=") != 1 {
					t.Errorf("line %q: want node=n1 once and no other node key", line)
				}
			}
		})
	}
}
