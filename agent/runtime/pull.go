package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
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
