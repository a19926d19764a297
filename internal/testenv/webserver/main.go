// Command webserver is the small HTTP server that the integration tests
// and the demo pack into container images (see testenv.BuildWebImage).
//
// It listens on $HIVEMIND_ADDR_HTTP (default :8080). GET / answers
// "VERSION=<$VERSION> TASK=<$HIVEMIND_TASK_ID>"; GET /healthz answers 200,
// or 500 when MODE=unhealthy. MODE=crash-after=<duration> makes it exit 1
// that long after it started. On SIGTERM or SIGINT it closes its listener,
// lets open requests finish and exits 0, unless MODE=ignore-sigterm, which
// keeps it serving until SIGKILL (for tests of stop timeouts).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const crashPrefix = "crash-after="

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(); err != nil {
		log.Printf("webserver: %v", err)
		os.Exit(1)
	}
}

func run() error {
	addr := os.Getenv("HIVEMIND_ADDR_HTTP")
	if addr == "" {
		addr = ":8080"
	}
	mode := os.Getenv("MODE")

	if d, ok := strings.CutPrefix(mode, crashPrefix); ok {
		after, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("MODE %q: %w", mode, err)
		}
		time.AfterFunc(after, func() {
			log.Printf("crashing as asked (MODE=%s)", mode)
			os.Exit(1)
		})
	}

	srv := &http.Server{
		Addr:              addr,
		Handler:           handler(mode),
		ReadHeaderTimeout: 5 * time.Second,
	}
	stopSignals := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if mode == "ignore-sigterm" {
		signal.Ignore(syscall.SIGTERM)
		stopSignals = stopSignals[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()

	errc := make(chan error, 1)
	go func() {
		log.Printf("listening on %s version=%s mode=%q",
			addr, os.Getenv("VERSION"), mode)
		errc <- srv.ListenAndServe()
	}()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	// Shutdown closes the listener first, so new connections are refused
	// while the requests in flight finish.
	log.Printf("signal received, shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Printf("stopped")
	return nil
}

func handler(mode string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "VERSION=%s TASK=%s\n",
			os.Getenv("VERSION"), os.Getenv("HIVEMIND_TASK_ID"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if mode == "unhealthy" {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
