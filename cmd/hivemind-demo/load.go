package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// result is one request the load generator sent through an ingress.
type result struct {
	start, end time.Time
	target     string // the ingress address, "ip:port"
	kind       string // "keep-alive" or "new connection"
	version    string // "v1", "v2", ... from the answer; "" on failure
	task       string
	err        string // "" when the answer was a 200 with a version
}

// load sends GET / through every target ingress at a steady rate, over a
// keep-alive connection and over a new connection per request, and keeps
// every result.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []result
	kinds   map[string]bool // failure keys seen
}

// startLoad runs one sender per target and kind, each every interval.
// onNew is called with the first failure of each kind (see groupFailures)
// when it happens.
func startLoad(targets []string, interval time.Duration, onNew func(string)) *load {
	l := &load{stop: make(chan struct{}), kinds: map[string]bool{}}
	for _, target := range targets {
		for _, kind := range []string{"keep-alive", "new connection"} {
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableKeepAlives: kind == "new connection"}
			client := &http.Client{Transport: tr, Timeout: 3 * time.Second}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer tr.CloseIdleConnections()
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for {
					select {
					case <-l.stop:
						return
					case <-tick.C:
					}
					r := send(client, target, kind)
					l.mu.Lock()
					l.results = append(l.results, r)
					key := failureKey(r)
					fresh := key != "" && !l.kinds[key]
					if fresh {
						l.kinds[key] = true
					}
					l.mu.Unlock()
					if fresh {
						onNew(key)
					}
				}
			}()
		}
	}
	return l
}

func send(client *http.Client, target, kind string) result {
	r := result{start: time.Now(), target: target, kind: kind}
	resp, err := client.Get("http://" + target + "/")
	if err != nil {
		r.err = err.Error()
		r.end = time.Now()
		return r
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.end = time.Now()
	body := strings.TrimSpace(string(b))
	switch {
	case err != nil:
		r.err = "reading the answer: " + err.Error()
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Sprintf("HTTP %s: %.80s", resp.Status, body)
	default:
		// The web image answers "VERSION=v1 TASK=<id>".
		for _, f := range strings.Fields(body) {
			if v, ok := strings.CutPrefix(f, "VERSION="); ok {
				r.version = v
			}
			if v, ok := strings.CutPrefix(f, "TASK="); ok {
				r.task = v
			}
		}
		if r.version == "" {
			r.err = fmt.Sprintf("unexpected answer %.80q", body)
		}
	}
	return r
}

// finish stops the senders and returns every result, oldest first.
func (l *load) finish() []result {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]result(nil), l.results...)
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// errGroup is failures with the same target, kind and message.
type errGroup struct {
	key         string
	n           int
	first, last time.Time
	example     string
}

// ephemeral matches the varying parts of dial errors (local ports).
var ephemeral = regexp.MustCompile(`:\d{4,5}->`)

// groupFailures groups failed results by target, kind and message with
// the local port numbers left out.
func groupFailures(rs []result) []*errGroup {
	byKey := map[string]*errGroup{}
	var out []*errGroup
	for _, r := range rs {
		if r.err == "" {
			continue
		}
		key := failureKey(r)
		g := byKey[key]
		if g == nil {
			g = &errGroup{key: key, first: r.start, example: r.err}
			byKey[key] = g
			out = append(out, g)
		}
		g.n++
		g.last = r.start
	}
	return out
}

// failureKey is "target, kind: message" with local ports left out; "" if
// r did not fail.
func failureKey(r result) string {
	if r.err == "" {
		return ""
	}
	return fmt.Sprintf("%s, %s: %s", r.target, r.kind, ephemeral.ReplaceAllString(r.err, ":*->"))
}
