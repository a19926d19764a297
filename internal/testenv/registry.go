package testenv

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-memory OCI registry served over plain HTTP. Its
// content is lost when it is closed.
type Registry struct {
	// Addr is the host:port it listens on, the host part of image refs.
	Addr string

	srv  *http.Server
	done chan error
}

// StartRegistry serves an empty registry on addr ("127.0.0.1:0" picks a
// free port; Addr tells which). Its request log is discarded.
func StartRegistry(addr string) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", addr, err)
	}
	r := &Registry{
		Addr: ln.Addr().String(),
		srv: &http.Server{
			Handler: registry.New(
				registry.Logger(log.New(io.Discard, "", 0))),
			ReadHeaderTimeout: 10 * time.Second,
		},
		done: make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Ref is the full reference of repoTag ("web:v1") in this registry.
func (r *Registry) Ref(repoTag string) string {
	return r.Addr + "/" + repoTag
}

// Push uploads img as repoTag, either "web:v1" or a full reference whose
// host is this registry ("127.0.0.1:5000/web:v1").
func (r *Registry) Push(repoTag string, img v1.Image) error {
	ref, err := name.ParseReference(repoTag, name.Insecure,
		name.WithDefaultRegistry(r.Addr))
	if err != nil {
		return fmt.Errorf("image %q: %w", repoTag, err)
	}
	if err := remote.Write(ref, img); err != nil {
		return fmt.Errorf("push %q: %w", ref, err)
	}
	return nil
}

// Close stops serving and drops open connections at once: a graceful
// Shutdown would wait 5s for the connections that pulling clients open
// and never use.
func (r *Registry) Close() error {
	if err := r.srv.Close(); err != nil {
		return fmt.Errorf("registry %s: %w", r.Addr, err)
	}
	if err := <-r.done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("registry %s: %w", r.Addr, err)
	}
	return nil
}
