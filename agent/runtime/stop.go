package runtime

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// Remove implements Runtime.
func (r *Containerd) Remove(ctx context.Context, id string) error {
	return r.Stop(ctx, id, 0)
}

// Stop implements Runtime. A timeout of 0 kills at once.
func (r *Containerd) Stop(ctx context.Context, id string, timeout time.Duration) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}

	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("container %q: task: %w", id, err)
	default:
		if err := r.stopTask(ctx, id, task, timeout); err != nil {
			return err
		}
		st, err := task.Delete(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %q: delete task: %w", id, err)
		}
		if st != nil {
			r.noteExit(id, st)
		}
	}

	err = ctr.Delete(ctx, client.WithSnapshotCleanup)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %q: delete: %w", id, err)
	}
	r.logger.Info("container removed", "task_id", id)
	return nil
}

// stopTask ends a task: SIGTERM to its init process, then after timeout
// SIGKILL to every process in it. It returns once the task has exited.
func (r *Containerd) stopTask(ctx context.Context, id string, task client.Task, timeout time.Duration) error {
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container %q: status: %w", id, err)
	}
	if st.Status == client.Stopped {
		return nil
	}

	// Wait before Kill so that the exit cannot slip between them.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited, err := task.Wait(wctx)
	if err != nil {
		return fmt.Errorf("container %q: wait: %w", id, err)
	}

	if timeout > 0 {
		if err := kill(ctx, task, syscall.SIGTERM); err != nil {
			return fmt.Errorf("container %q: sigterm: %w", id, err)
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("container %q: stop: %w", id, ctx.Err())
		case <-timer.C:
			r.logger.Warn("container ignored SIGTERM, killing",
				"task_id", id, "timeout", timeout)
		}
	}

	if err := kill(ctx, task, syscall.SIGKILL, client.WithKillAll); err != nil {
		return fmt.Errorf("container %q: sigkill: %w", id, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("container %q: kill: %w", id, ctx.Err())
	}
}

// kill signals a task; a task that is gone or already stopped is fine.
func kill(ctx context.Context, task client.Task, sig syscall.Signal, opts ...client.KillOpts) error {
	err := task.Kill(ctx, sig, opts...)
	if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return nil
	}
	return err
}
