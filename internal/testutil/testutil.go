// Package testutil holds the helpers the unit tests of several packages
// share: one wait helper, one logger that writes to the test's log, and
// one way to change a SQLite snapshot file.
// Product code never imports it.
package testutil

import (
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// pollInterval is how often WaitFor checks its condition.
const pollInterval = 10 * time.Millisecond

// WaitFor calls cond until it returns nil, and fails the test when d has
// passed with cond's last error, which names what is not yet true.
func WaitFor(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", d, err)
		}
		time.Sleep(pollInterval) // the polling pace, not synchronisation
	}
}

// Logger returns a logger named after the test that writes to t.Log at
// level until the test ends: raft's and memberlist's goroutines may still
// log after their Shutdown returns, when t.Log would panic.
func Logger(t testing.TB, level hclog.Level) hclog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: level, Output: w})
}

type writer struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// ExecSQLite runs stmt on the SQLite file at path (creating it if
// missing), as an operator with sqlite3 would: tests use it to make
// snapshot files that are broken in a given way.
func ExecSQLite(t testing.TB, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(stmt)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}
