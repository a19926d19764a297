package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
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

// loadResult is one request of the load.
type loadResult struct {
	client  string    // "w1 keep-alive", "w2 new-conn"
	sent    time.Time // when the request was sent
	took    time.Duration
	version string // VERSION of the answer, "" if it failed
	task    string
	err     string // why it failed, "" if it succeeded
	reused  bool   // sent on a connection of an earlier request
}

// load sends GET / to the ingress of every worker until stopped.
type load struct {
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	count   atomic.Int64
	started time.Time

	mu       sync.Mutex
	results  []loadResult
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
		r := loadGet(hc, url)
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

// loadGet sends one request and reads which version and task answered.
func loadGet(hc *http.Client, url string) loadResult {
	r := loadResult{sent: time.Now()}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		r.err = err.Error()
		return r
	}
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { r.reused = info.Reused },
	}
	resp, err := hc.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
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
		reused:    map[string]int{},
		tasks:     map[string]map[string]bool{},
	}
	for _, r := range l.results {
		rep.byClient[r.client]++
		if r.reused {
			rep.reused[r.client]++
		}
		if r.task != "" {
			if rep.tasks[r.client] == nil {
				rep.tasks[r.client] = map[string]bool{}
			}
			rep.tasks[r.client][r.task] = true
		}
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
	results   []loadResult
	duration  time.Duration
	failed    []loadResult
	byVersion map[string]int             // successful answers per VERSION
	byClient  map[string]int             // requests per client
	reused    map[string]int             // requests on a reused connection, per client
	tasks     map[string]map[string]bool // tasks that answered, per client
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
		clients = append(clients, fmt.Sprintf("%s=%d (%d on a reused connection, %d tasks)",
			c, n, r.reused[c], len(r.tasks[c])))
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
			len(r.failed), len(r.results), what, describeResults(r.failed, 10))
	}
	// Keep-alive clients do keep their connection, and are balanced
	// request by request; new-connection clients never reuse one.
	for c, n := range r.byClient {
		switch {
		case strings.HasSuffix(c, "keep-alive") && r.reused[c] < n/2:
			t.Errorf("%s: %d of %d requests on a reused connection: keep-alive is not exercised",
				c, r.reused[c], n)
		case strings.HasSuffix(c, "keep-alive") && len(r.tasks[c]) < 2:
			t.Errorf("%s: answered by %d task(s) over a kept connection, want the ingress to balance per request",
				c, len(r.tasks[c]))
		case strings.HasSuffix(c, "new-conn") && r.reused[c] > 0:
			t.Errorf("%s: %d requests on a reused connection", c, r.reused[c])
		}
	}
	if r.rate() < loadMinRate {
		t.Errorf("the load reached %.0f requests/s during %s, want at least %.0f",
			r.rate(), what, loadMinRate)
	}
}

// answeredBy returns the successful requests answered by version that
// were sent after since.
func (r *loadReport) answeredBy(version string, since time.Time) []loadResult {
	var out []loadResult
	for _, res := range r.results {
		if res.err == "" && res.version == version && res.sent.After(since) {
			out = append(out, res)
		}
	}
	return out
}

// describeResults prints up to n results, one a line.
func describeResults(rs []loadResult, n int) string {
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

// The load generator counts every kind of failure: a status other than
// 200, an answer that names no version, and a connection closed with no
// answer; and it tells versions apart.
func TestLoadCountsFailures(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 5 {
		case 0:
			fmt.Fprintln(w, "VERSION=v1 TASK=a")
		case 1:
			fmt.Fprintln(w, "VERSION=v2 TASK=b")
		case 2:
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case 3:
			fmt.Fprintln(w, "hello")
		case 4:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	l := startLoad(map[string]string{"a": addr, "b": addr})
	t.Cleanup(l.halt)
	wait(t, 10*time.Second, "100 requests sent", func() error {
		if got := l.sentSince(time.Time{}); got < 100 {
			return fmt.Errorf("%d requests sent", got)
		}
		return nil
	})
	rep := l.finish(t)
	t.Logf("%s", rep)
	kinds := map[string]int{}
	for _, r := range rep.failed {
		switch {
		case strings.Contains(r.err, "502"):
			kinds["status"]++
		case strings.Contains(r.err, "unexpected answer"):
			kinds["answer"]++
		default:
			kinds["connection"]++
		}
	}
	if kinds["status"] == 0 || kinds["answer"] == 0 || kinds["connection"] == 0 {
		t.Errorf("failures by kind %v: want each kind counted\n%s", kinds, describeResults(rep.failed, 10))
	}
	if rep.byVersion["v1"] == 0 || rep.byVersion["v2"] == 0 {
		t.Errorf("answers by version %v, want v1 and v2", rep.byVersion)
	}
	if rep.reused["a keep-alive"] == 0 || rep.reused["a new-conn"] != 0 {
		t.Errorf("requests on a reused connection per client %v: want some for keep-alive, none for new-conn",
			rep.reused)
	}
	if ok := rep.byVersion["v1"] + rep.byVersion["v2"]; ok+len(rep.failed) != len(rep.results) {
		t.Errorf("%d answers and %d failures, but %d requests", ok, len(rep.failed), len(rep.results))
	}
}
