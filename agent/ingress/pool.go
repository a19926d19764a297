package ingress

import (
	"net/http"
	"sync"
)

// backend is one entry of a route's rotation.
type backend struct {
	Backend
	rt *http.Transport // protocol http only
}

// pool is the rotation of one ingress port, picked round-robin.
type pool struct {
	active *activeCounts

	// mu is held across a pick and its count so that set, which takes
	// it too, never returns while a pick of a removed backend is still
	// uncounted.
	mu       sync.Mutex
	backends []*backend
	next     int
}

func newPool(active *activeCounts) *pool {
	return &pool{active: active}
}

// set replaces the rotation.
func (p *pool) set(backends []*backend) {
	p.mu.Lock()
	p.backends = backends
	p.mu.Unlock()
}

// pick returns the next backend not in tried and counts a connection to
// its task; the caller releases it with p.active.release. It returns
// errNoBackend when every backend has been tried.
func (p *pool) pick(tried []*backend) (*backend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	n := len(p.backends)
	for i := 0; i < n; i++ {
		b := p.backends[(p.next+i)%n]
		if contains(tried, b) {
			continue
		}
		p.next = (p.next + i + 1) % n
		p.active.acquire(b.TaskID)
		return b, nil
	}
	return nil, errNoBackend
}

// contains compares by task and address, not by pointer: an Update
// between two attempts replaces every entry, and a task that failed must
// not be tried again in its new entry.
func contains(list []*backend, b *backend) bool {
	for _, x := range list {
		if x.Backend == b.Backend {
			return true
		}
	}
	return false
}

// activeCounts counts the open connections and requests per task.
type activeCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func newActiveCounts() *activeCounts {
	return &activeCounts{m: make(map[string]int)}
}

func (a *activeCounts) acquire(taskID string) {
	a.mu.Lock()
	a.m[taskID]++
	a.mu.Unlock()
}

func (a *activeCounts) release(taskID string) {
	a.mu.Lock()
	if a.m[taskID] <= 1 {
		delete(a.m, taskID)
	} else {
		a.m[taskID]--
	}
	a.mu.Unlock()
}

func (a *activeCounts) get(taskID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[taskID]
}

// bufferPool lends the 32 KiB copy buffers of the HTTP proxies.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any {
		b := make([]byte, 32<<10)
		return &b
	}}}
}

func (b *bufferPool) Get() []byte { return *(b.p.Get().(*[]byte)) }

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
