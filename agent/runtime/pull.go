package runtime

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// Pull implements Runtime. The image is unpacked into the snapshotter
// that Start uses, so Start does no registry I/O.
func (r *Containerd) Pull(ctx context.Context, image string) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	ref, err := normalize(image)
	if err != nil {
		return err
	}

	_, err = r.client.Pull(ctx, ref,
		client.WithResolver(r.resolver()),
		client.WithPullUnpack,
		client.WithPullSnapshotter(r.snapshotter),
	)
	if errdefs.IsNotFound(err) {
		return &pullError{reason: reason(err, image, ref),
			errs: []error{ErrImageNotFound, err}}
	}
	if err != nil {
		return &pullError{reason: reason(err, image, ref),
			errs: []error{err}}
	}
	r.logger.Info("image pulled", "image", ref)
	return nil
}

// pullError is a failed pull. Its text is the registry's reason alone:
// the caller names the image, and containerd's own text repeats it.
type pullError struct {
	reason string
	errs   []error
}

func (e *pullError) Error() string   { return e.reason }
func (e *pullError) Unwrap() []error { return e.errs }

// reason is err's text after the last mention of the image, so
// `failed to resolve reference "r": r: not found` becomes "not found".
// Only the text shown changes: callers still test the wrapped errors.
func reason(err error, image, ref string) string {
	msg := err.Error()
	for _, name := range []string{image, ref} {
		for _, mark := range []string{name + "\": ", name + ": "} {
			if i := strings.LastIndex(msg, mark); i >= 0 {
				msg = msg[i+len(mark):]
			}
		}
	}
	if msg == "" {
		return err.Error()
	}
	return msg
}

// resolver reaches registries over HTTPS, or plain HTTP for the insecure
// ones, anonymously.
// TODO: registry credentials (from a secret) when secrets exist.
func (r *Containerd) resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithPlainHTTP(r.plainHTTP),
			docker.WithAuthorizer(docker.NewDockerAuthorizer()),
		),
	})
}

// normalize turns "web:v1" or "nginx" into the full reference containerd
// stores images under ("docker.io/library/nginx:latest").
func normalize(image string) (string, error) {
	ref, err := reference.ParseDockerRef(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	return ref.String(), nil
}

// plainHTTP tells whether a registry host is reached without TLS.
func (r *Containerd) plainHTTP(host string) (bool, error) {
	if r.insecure[host] {
		return true, nil
	}
	if h, _, err := net.SplitHostPort(host); err == nil && r.insecure[h] {
		return true, nil
	}
	if ip := net.ParseIP(hostOnly(host)); ip != nil && ip.IsLoopback() {
		return true, nil
	}
	return hostOnly(host) == "localhost", nil
}

func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}
