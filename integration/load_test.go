package integration

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The load generator of the traffic tests: per worker, one client that
// keeps its connection to the ingress alive and one that opens a new
// connection for every request, each sending a request every loadTick.
const (
	loadTick = 20 * time.Millisecond // 4 clients: about 200 requests/s
	// loadMinRate is the rate the traffic tests must reach (issue 3).
	loadMinRate = 100.0
	// loadMaxDuration and loadMaxRequests bound a run that nobody stops:
	// the generator then stops by itself and the test fails.
	loadMaxDuration = 4 * time.Minute
	loadMaxRequests = 60000
	// loadRequestTimeout bounds one request.
	loadRequestTimeout = 5 * time.Second
)

// result is one request of the load.
type result struct {
	client  string    // "w1 keep-alive", "w2 new-conn"
	sent    time.Time // when the request was sent
	took    time.Duration
	version string // VERSION of the answer, "" if it failed
	task    string
	err     string // why it failed, "" if it succeeded
}

// load sends GET / to the ingress of every worker until stopped.
type load struct {
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	count   atomic.Int64
	started time.Time

	mu       sync.Mutex
	results  []result
	hitBound string // why it stopped by itself, "" if it was stopped
	ended    time.Time
}

// startLoad starts the clients against targets, worker name -> ingress
// address (ip:port).
func startLoad(targets map[string]string) *load {
	l := &load{stop: make(chan struct{}), started: time.Now()}
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		url := "http://" + targets[n] + "/"
		keep := &http.Client{
			Timeout:   loadRequestTimeout,
			Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute},
		}
		fresh := &http.Client{
			Timeout:   loadRequestTimeout,
			Transport: &http.Transport{DisableKeepAlives: true},
		}
		l.wg.Add(2)
		go l.client(n+" keep-alive", keep, url)
		go l.client(n+" new-conn", fresh, url)
	}
	return l
}

func (l *load) client(name string, hc *http.Client, url string) {
	defer l.wg.Done()
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(loadTick)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		if time.Since(l.started) > loadMaxDuration {
			l.bound(fmt.Sprintf("ran for %s", loadMaxDuration))
			return
		}
		if l.count.Add(1) > loadMaxRequests {
			l.bound(fmt.Sprintf("sent %d requests", loadMaxRequests))
			return
		}
		r := get(hc, url)
		r.client = name
		l.mu.Lock()
		l.results = append(l.results, r)
		l.mu.Unlock()
	}
}

func (l *load) bound(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hitBound == "" {
		l.hitBound = why
	}
}

// get sends one request and reads which version and task answered.
func get(hc *http.Client, url string) result {
	r := result{sent: time.Now()}
	resp, err := hc.Get(url)
	if err != nil {
		r.err = err.Error()
		r.took = time.Since(r.sent)
		return r
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.took = time.Since(r.sent)
	switch {
	case err != nil:
		r.err = fmt.Sprintf("%s: reading the body: %v", resp.Status, err)
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Sprintf("%s: %q", resp.Status, strings.TrimSpace(string(body)))
	default:
		var ok bool
		r.version, r.task, ok = parseAnswer(string(body))
		if !ok {
			r.err = fmt.Sprintf("unexpected answer %q", body)
		}
	}
	return r
}

// parseAnswer reads "VERSION=<v> TASK=<id>".
func parseAnswer(body string) (version, task string, ok bool) {
	f := strings.Fields(body)
	if len(f) != 2 {
		return "", "", false
	}
	version, ok1 := strings.CutPrefix(f[0], "VERSION=")
	task, ok2 := strings.CutPrefix(f[1], "TASK=")
	return version, task, ok1 && ok2 && version != "" && task != ""
}

// halt stops the clients and waits for their last requests. It may be
// called more than once.
func (l *load) halt() {
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		l.mu.Lock()
		l.ended = time.Now()
		l.mu.Unlock()
	})
}

// sentSince counts the requests sent after since.
func (l *load) sentSince(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i := len(l.results) - 1; i >= 0 && l.results[i].sent.After(since); i-- {
		n++
	}
	return n
}

// finish stops the clients, waits for their last requests and returns
// the summary. It fails t if the load stopped by itself before.
func (l *load) finish(t *testing.T) *loadReport {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hitBound != "" {
		t.Errorf("the load stopped by itself before the scenario ended: %s", l.hitBound)
	}
	rep := &loadReport{
		results:   l.results,
		duration:  l.ended.Sub(l.started),
		byVersion: map[string]int{},
		byClient:  map[string]int{},
	}
	for _, r := range l.results {
		rep.byClient[r.client]++
		if r.err != "" {
			rep.failed = append(rep.failed, r)
			continue
		}
		rep.byVersion[r.version]++
	}
	return rep
}

// loadReport sums up a load run.
type loadReport struct {
	results   []result
	duration  time.Duration
	failed    []result
	byVersion map[string]int // successful answers per VERSION
	byClient  map[string]int // requests per client
}

// rate is the requests sent per second.
func (r *loadReport) rate() float64 {
	return float64(len(r.results)) / r.duration.Seconds()
}

func (r *loadReport) String() string {
	versions := make([]string, 0, len(r.byVersion))
	for v, n := range r.byVersion {
		versions = append(versions, fmt.Sprintf("%s=%d", v, n))
	}
	sort.Strings(versions)
	clients := make([]string, 0, len(r.byClient))
	for c, n := range r.byClient {
		clients = append(clients, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(clients)
	var slowest time.Duration
	for _, res := range r.results {
		slowest = max(slowest, res.took)
	}
	return fmt.Sprintf("%d requests in %s (%.0f/s), %d failed; answers by version: %s; per client: %s; slowest %s",
		len(r.results), r.duration.Round(time.Millisecond), r.rate(), len(r.failed),
		strings.Join(versions, " "), strings.Join(clients, " "), slowest.Round(time.Millisecond))
}

// check logs the report and fails t on any failed request or a rate
// below loadMinRate.
func (r *loadReport) check(t *testing.T, what string) {
	t.Helper()
	t.Logf("load during %s: %s", what, r)
	if len(r.failed) > 0 {
		t.Errorf("%d of %d requests failed during %s; first ones:\n%s",
			len(r.failed), len(r.results), what, describe(r.failed, 10))
	}
	if r.rate() < loadMinRate {
		t.Errorf("the load reached %.0f requests/s during %s, want at least %.0f",
			r.rate(), what, loadMinRate)
	}
}

// answeredBy returns the successful requests answered by version that
// were sent after since.
func (r *loadReport) answeredBy(version string, since time.Time) []result {
	var out []result
	for _, res := range r.results {
		if res.err == "" && res.version == version && res.sent.After(since) {
			out = append(out, res)
		}
	}
	return out
}

// describe prints up to n results, one a line.
func describe(rs []result, n int) string {
	var b strings.Builder
	for i, r := range rs {
		if i == n {
			fmt.Fprintf(&b, "  ... and %d more\n", len(rs)-n)
			break
		}
		fmt.Fprintf(&b, "  %s %s (took %s): ", r.sent.Format("15:04:05.000"), r.client,
			r.took.Round(time.Millisecond))
		if r.err != "" {
			fmt.Fprintf(&b, "%s\n", r.err)
		} else {
			fmt.Fprintf(&b, "VERSION=%s TASK=%s\n", r.version, r.task)
		}
	}
	return b.String()
}
