package ingress

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// placeholderHost stands in the outgoing URL until a backend is picked.
const placeholderHost = "backend.invalid"

// serveHTTP starts the reverse proxy of an HTTP ingress port. The caller
// has done p.wg.Add(1) for the server's goroutine.
//
// TODO: a proxied request costs about 190µs of CPU here, four times what
// the test server behind it needs (bench/RESULTS.md, ingress), mostly the
// second hop's loopback socket writes and the hand-offs between
// net/http's serving goroutine and its Transport's read and write loops.
// Writing requests to pooled backend connections from the serving
// goroutine, with a small HTTP/1.1 codec of our own, would remove the
// hand-offs; measure first with a fixed-rate load on cores of its own.
func (p *Proxy) serveHTTP(l *listener) {
	rp := &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    &roundTripper{p: p, l: l},
		ErrorHandler: l.httpError,
		BufferPool:   p.bufs,
	}
	l.srv = &http.Server{
		Handler:           rp,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// net/http logs only the unusual here: accept errors, handler
		// panics, malformed requests.
		ErrorLog: l.log.StandardLogger(&hclog.StandardLoggerOptions{
			ForceLevel: hclog.Warn,
		}),
	}
	p.connsMu.Lock()
	p.servers[l.srv] = struct{}{}
	p.connsMu.Unlock()

	go func() {
		defer p.wg.Done()
		err := l.srv.Serve(l.ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) &&
			!errors.Is(err, net.ErrClosed) {
			l.log.Error("ingress port stopped serving", "error", err)
		}
	}()
}

// shutdownHTTP lets the requests of a removed port finish, or cuts them
// when the proxy closes. The caller has done p.wg.Add(1).
func (p *Proxy) shutdownHTTP(l *listener) {
	defer p.wg.Done()
	if err := l.srv.Shutdown(p.ctx); err != nil {
		l.srv.Close()
	}
	p.connsMu.Lock()
	delete(p.servers, l.srv)
	p.connsMu.Unlock()
}

// rewrite directs the outgoing request at the placeholder host; the
// round tripper puts the picked backend in. X-Forwarded-For carries only
// the address the proxy saw: a value sent by the client is not trusted.
func rewrite(r *httputil.ProxyRequest) {
	r.Out.URL.Scheme = "http"
	r.Out.URL.Host = placeholderHost
	r.SetXForwarded()
}

// httpError answers a request no backend could take: 503 when the
// rotation is empty, 502 when every attempt failed.
func (l *listener) httpError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errNoBackend) {
		http.Error(w, "no healthy task", http.StatusServiceUnavailable)
		return
	}
	if r.Context().Err() == nil {
		// Per request, so never above debug: a dead task in rotation
		// would flood the log.
		l.log.Debug("request failed on every attempt", "error", err)
	}
	http.Error(w, "bad gateway", http.StatusBadGateway)
}

// roundTripper picks a backend per request and retries on another one
// when the attempt failed in a way that is safe to repeat.
type roundTripper struct {
	p *Proxy
	l *listener
}

// RoundTrip implements http.RoundTripper.
func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	var body *guardedBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &guardedBody{rc: req.Body}
	}

	var tried []*backend
	var lastErr error
	for attempt := 0; attempt <= t.p.cfg.Retries; attempt++ {
		b, err := t.l.pool.pick(tried)
		if err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		tried = append(tried, b)

		resp, err := b.rt.RoundTrip(outgoing(req, b.Addr, body))
		if err == nil {
			resp.Body = releaseOnClose(resp.Body, func() {
				t.p.active.release(b.TaskID)
			})
			return resp, nil
		}
		t.p.active.release(b.TaskID)
		lastErr = err

		if !retryable(req, body, err) {
			break
		}
		t.l.log.Debug("request to task failed, trying another",
			"task_id", b.TaskID, "addr", b.Addr, "error", err)
	}
	return nil, lastErr
}

// outgoing copies req for one attempt at addr. The copy is shallow: the
// attempts run one after the other and none changes the headers.
func outgoing(req *http.Request, addr string, body *guardedBody) *http.Request {
	out := new(http.Request)
	*out = *req
	u := *req.URL
	u.Host = addr
	out.URL = &u
	if body != nil {
		out.Body = body
	}
	return out
}

// retryable reports whether a failed attempt may be repeated on another
// backend. A failed dial sent nothing, so any request may be repeated. An
// idempotent request may be repeated after any other failure too, but only
// if it has no body: the transport may still be reading the body of the
// failed attempt when it returns.
func retryable(req *http.Request, body *guardedBody, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if isDialError(err) {
		return body == nil || !body.touched.Load()
	}
	return body == nil && idempotent(req)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent follows RFC 9110 section 9.2.2, plus the idempotency-key
// headers net/http honours.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions,
		http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// guardedBody is a request body shared by the attempts of one request: it
// records whether an attempt read from it, and leaves closing the
// client's body to the server.
type guardedBody struct {
	rc      io.ReadCloser
	touched atomic.Bool
}

func (g *guardedBody) Read(b []byte) (int, error) {
	g.touched.Store(true)
	return g.rc.Read(b)
}

func (g *guardedBody) Close() error { return nil }

// releaseOnClose wraps a response body so that the task's count drops
// once the proxy is done with it. A 101 Switching Protocols body is also
// the upgraded connection, which the reverse proxy writes to.
func releaseOnClose(rc io.ReadCloser, release func()) io.ReadCloser {
	b := releasingBody{ReadCloser: rc, once: new(sync.Once), release: release}
	if rw, ok := rc.(io.ReadWriteCloser); ok {
		return releasingRWBody{releasingBody: b, w: rw}
	}
	return b
}

type releasingBody struct {
	io.ReadCloser
	once    *sync.Once
	release func()
}

func (b releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

type releasingRWBody struct {
	releasingBody
	w io.Writer
}

func (b releasingRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }
