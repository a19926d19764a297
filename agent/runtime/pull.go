package runtime

import (
	"context"
	"fmt"
	"net"

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
		return fmt.Errorf("image %q: %w: %w", image, ErrImageNotFound, err)
	}
	if err != nil {
		return fmt.Errorf("image %q: pull: %w", image, err)
	}
	r.logger.Info("image pulled", "image", ref)
	return nil
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
