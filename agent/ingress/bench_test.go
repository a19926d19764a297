package ingress

import (
	"net/http"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// BenchmarkHTTP compares a small GET straight to a task with the same GET
// through the proxy, over keep-alive connections from parallel clients.
func BenchmarkHTTP(b *testing.B) {
	backend := newHTTPBackend(b, "a")
	p := newProxy(b, hclog.Off)
	port := freePort(b)
	if err := p.Update([]Route{httpRoute(port, backend.backend())}); err != nil {
		b.Fatalf("update: %v", err)
	}

	targets := []struct {
		name string
		url  string
	}{
		{name: "direct", url: backend.srv.URL + "/"},
		{name: "proxy", url: url(port, "/")},
	}
	for _, tc := range targets {
		b.Run(tc.name, func(b *testing.B) {
			c := newClient(b, true)
			c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.getOK(tc.url); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
