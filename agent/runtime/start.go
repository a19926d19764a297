package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Start implements Runtime.
func (r *Containerd) Start(ctx context.Context, s Spec) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	if r.exists(ctx, s.ID) {
		return fmt.Errorf("container %q: %w", s.ID, ErrExists)
	}
	img, err := r.image(ctx, s.Image)
	if err != nil {
		return fmt.Errorf("container %q: %w", s.ID, err)
	}

	ctr, err := r.create(ctx, img, s)
	if errdefs.IsAlreadyExists(err) && !r.exists(ctx, s.ID) {
		// No container has this ID, so the snapshot is a leftover of
		// one deleted without its snapshot: remove it and try again.
		r.logger.Warn("removing leftover snapshot", "task_id", s.ID)
		rerr := r.client.SnapshotService(r.snapshotter).Remove(ctx, s.ID)
		if rerr != nil && !errdefs.IsNotFound(rerr) {
			return fmt.Errorf("container %q: leftover snapshot: %w",
				s.ID, rerr)
		}
		ctr, err = r.create(ctx, img, s)
	}
	if errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("container %q: %w", s.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("container %q: create: %w", s.ID, err)
	}

	if err := r.startTask(ctx, ctr, s); err != nil {
		// Leave nothing half made behind: the agent retries with the
		// same ID, which must not then fail with ErrExists.
		cctx, cancel := context.WithTimeout(
			context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := ctr.Delete(cctx, client.WithSnapshotCleanup); derr != nil {
			r.logger.Warn("cleanup after failed start", "task_id", s.ID,
				"error", derr)
		}
		return err
	}
	r.logger.Info("container started", "task_id", s.ID, "image", s.Image)
	return nil
}

// exists tells whether a container has this ID. An error counts as
// "no": creating the container then fails with the real reason.
func (r *Containerd) exists(ctx context.Context, id string) bool {
	_, err := r.client.LoadContainer(ctx, id)
	return err == nil
}

// create makes the container record and its rootfs snapshot (key: the ID).
func (r *Containerd) create(ctx context.Context, img client.Image, s Spec) (client.Container, error) {
	return r.client.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithSnapshotter(r.snapshotter),
		client.WithNewSnapshot(s.ID, img),
		client.WithRuntime(runcRuntime, nil),
		client.WithNewSpec(specOpts(img, s)...),
		client.WithContainerLabels(labels(s)),
	)
}

// image returns a pulled image, unpacked into our snapshotter.
func (r *Containerd) image(ctx context.Context, image string) (client.Image, error) {
	ref, err := normalize(image)
	if err != nil {
		return nil, err
	}
	img, err := r.client.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %q: %w", image, ErrImageNotPulled)
	}
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	if !ok {
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return nil, fmt.Errorf("image %q: unpack: %w", image, err)
		}
	}
	return img, nil
}

func specOpts(img client.Image, s Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(s.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(s.Args...))
	}
	return append(opts,
		oci.WithEnv(s.Env),
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
		oci.WithHostResolvconf,
	)
}

func labels(s Spec) map[string]string {
	out := make(map[string]string, len(s.Labels)+1)
	for k, v := range s.Labels {
		out[k] = v
	}
	if _, ok := out[TaskIDLabel]; !ok {
		out[TaskIDLabel] = s.ID
	}
	return out
}

// startTask creates the task with its output in s.LogPath, starts it and
// hands its exit to a watcher. On error the task is gone again.
func (r *Containerd) startTask(ctx context.Context, ctr client.Container, s Spec) error {
	creator := cio.NullIO
	if s.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o755); err != nil {
			return fmt.Errorf("container %q: log: %w", s.ID, err)
		}
		creator = cio.LogFile(s.LogPath)
	}
	task, err := ctr.NewTask(ctx, creator)
	if err != nil {
		return fmt.Errorf("container %q: create task: %w", s.ID, err)
	}

	// Wait before Start: a task that exits at once must still be seen.
	wctx, cancel := context.WithCancel(r.ctx)
	exited, err := task.Wait(wctx)
	if err == nil {
		err = task.Start(ctx)
	}
	if err != nil {
		cancel()
		dctx, dcancel := context.WithTimeout(
			context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		if _, derr := task.Delete(dctx, client.WithProcessKill); derr != nil {
			r.logger.Warn("cleanup after failed start", "task_id", s.ID,
				"error", derr)
		}
		return fmt.Errorf("container %q: start: %w", s.ID, err)
	}

	// A watcher of an earlier container of this ID may still be
	// delivering its exit, so this one is counted, never refused.
	if _, err := r.track(s.ID, false); err != nil {
		cancel()
		return err
	}
	go r.report(s.ID, exited, cancel)
	return nil
}
