package ingress

import (
	"errors"
	"io"
	"net"
	"time"
)

// serveTCP accepts the connections of a TCP ingress port until its
// listener closes. The caller has done p.wg.Add(1).
func (p *Proxy) serveTCP(l *listener) {
	defer p.wg.Done()

	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does, instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accepting a connection", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		delay = 0

		p.wg.Add(1)
		go p.proxyTCP(l, c)
	}
}

// proxyTCP connects a client to a backend and copies both ways until both
// sides are done.
func (p *Proxy) proxyTCP(l *listener, c net.Conn) {
	defer p.wg.Done()
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)

	b, bc := p.dialBackend(l)
	if bc == nil {
		c.Close()
		return
	}
	defer p.active.release(b.TaskID)
	if !p.track(bc) {
		bc.Close()
		c.Close()
		return
	}
	defer p.untrack(bc)

	pipe(c, bc)
}

// dialBackend connects to the next backend, trying up to Retries others
// when a dial fails. The returned backend's count is held; on failure
// both results are nil.
func (p *Proxy) dialBackend(l *listener) (*backend, net.Conn) {
	var tried []*backend
	for attempt := 0; attempt <= p.cfg.Retries; attempt++ {
		b, err := l.pool.pick(tried)
		if err != nil {
			if attempt == 0 {
				l.log.Debug("connection dropped: no healthy task")
			}
			return nil, nil
		}
		tried = append(tried, b)

		bc, err := p.dialer.DialContext(p.ctx, "tcp", b.Addr)
		if err == nil {
			return b, bc
		}
		p.active.release(b.TaskID)
		// Per connection, so never above debug.
		l.log.Debug("dial to task failed", "task_id", b.TaskID,
			"addr", b.Addr, "error", err)
	}
	return nil, nil
}

// pipe copies a to b and b to a. A side that reaches EOF half-closes the
// other, so a client may send its request, shut down writing and still
// read the answer; an error on either side closes both.
func pipe(a, b net.Conn) {
	errc := make(chan error, 2)
	go copyHalf(b, a, errc)
	go copyHalf(a, b, errc)

	if err := <-errc; err != nil {
		a.Close()
		b.Close()
	}
	<-errc
	a.Close()
	b.Close()
}

func copyHalf(dst, src net.Conn, errc chan<- error) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		}
	}
	errc <- err
}
