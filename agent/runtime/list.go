package runtime

import (
	"context"
	"fmt"
	"sort"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// List implements Runtime.
func (r *Containerd) List(ctx context.Context) ([]Container, error) {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return nil, err
	}
	ctrs, err := r.client.Containers(ctx,
		fmt.Sprintf("labels.%q", TaskIDLabel))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}

	out := make([]Container, 0, len(ctrs))
	for _, ctr := range ctrs {
		c, err := describe(ctx, ctr)
		if errdefs.IsNotFound(err) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func describe(ctx context.Context, ctr client.Container) (Container, error) {
	info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, fmt.Errorf("container %q: %w", ctr.ID(), err)
	}
	c := Container{ID: ctr.ID(), Labels: info.Labels}

	// A container without its task (the shim died and containerd
	// cleaned up after it, or it was never started) has no exit status
	// left: unknown, not 0.
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		c.ExitCode = UnknownExitCode
		return c, nil
	}
	if err != nil {
		return Container{}, fmt.Errorf("container %q: task: %w", c.ID, err)
	}
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		c.ExitCode = UnknownExitCode
		return c, nil
	}
	if err != nil {
		return Container{}, fmt.Errorf("container %q: status: %w", c.ID, err)
	}
	c.Pid = task.Pid()
	switch st.Status {
	case client.Running, client.Paused, client.Pausing:
		c.Running = true
	case client.Stopped:
		c.ExitCode = int(st.ExitStatus)
	}
	return c, nil
}
