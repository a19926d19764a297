package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// track counts a watcher goroutine for id. With onlyFirst it does not
// when id has one already, and returns false. ErrClosed after Close.
func (r *Containerd) track(id string, onlyFirst bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, ErrClosed
	}
	if onlyFirst && r.watched[id] > 0 {
		return false, nil
	}
	r.watched[id]++
	r.wg.Add(1)
	return true, nil
}

// untrack undoes track.
func (r *Containerd) untrack(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watched[id]--; r.watched[id] <= 0 {
		delete(r.watched, id)
		delete(r.lost, id)
	}
	r.wg.Done()
}

// Watch implements Runtime.
func (r *Containerd) Watch(ctx context.Context, id string) error {
	ctx, err := r.opctx(ctx)
	if err != nil {
		return err
	}
	first, err := r.track(id, true)
	if err != nil || !first {
		return err
	}
	exited, cancel, err := r.wait(ctx, id)
	if err != nil {
		r.untrack(id)
		return err
	}
	r.logger.Info("watching container", "task_id", id)
	go r.report(id, exited, cancel)
	return nil
}

// wait starts a Wait, under r.ctx, on the task of an existing container.
func (r *Containerd) wait(ctx context.Context, id string) (<-chan client.ExitStatus, context.CancelFunc, error) {
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: %w", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("container %q: no task: %w",
			id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: task: %w", id, err)
	}
	wctx, cancel := context.WithCancel(r.ctx)
	exited, err := task.Wait(wctx)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("container %q: wait: %w", id, err)
	}
	return exited, cancel, nil
}

// report waits for a task's exit and sends it on Exits. When the Wait
// call breaks (containerd restarted) it waits again on the task, and
// reports UnknownExitCode if the task is gone by then.
func (r *Containerd) report(id string, exited <-chan client.ExitStatus, cancel context.CancelFunc) {
	defer r.untrack(id)

	e, ok := r.waitExit(id, exited, cancel)
	if !ok {
		return // closed
	}
	r.logger.Info("container exited", "task_id", id, "code", e.Code)
	select {
	case r.exits <- e:
	case <-r.ctx.Done():
	}
}

// waitExit returns the exit of id's task, false after Close. A Wait call
// breaks when containerd restarts; the task may exit, and Stop may even
// delete it, before a new Wait is in place. So while a watcher retries,
// Stop hands it the exit status it got from deleting the task (lost).
func (r *Containerd) waitExit(id string, exited <-chan client.ExitStatus, cancel context.CancelFunc) (Exit, bool) {
	defer r.setRetrying(id, false)
	for {
		st := <-exited
		cancel()
		if r.ctx.Err() != nil {
			return Exit{}, false
		}
		if st.Error() == nil {
			return exitOf(id, st), true
		}

		r.logger.Warn("waiting for container exit failed, retrying",
			"task_id", id, "error", st.Error())
		r.setRetrying(id, true)
		backoff := 100 * time.Millisecond
		since := time.Now()
		for {
			select {
			case <-r.ctx.Done():
				return Exit{}, false
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)

			var err error
			exited, cancel, err = r.wait(r.ctx, id)
			if err == nil {
				break
			}
			// A restarted containerd lists a running task only once it
			// has reconnected to its shim, so "no task" is final only
			// with the exit Stop saw, or after lostTaskGrace.
			if errors.Is(err, ErrNotFound) {
				if e, ok := r.lostExit(id); ok {
					return e, true
				}
				if time.Since(since) > lostTaskGrace {
					return Exit{ID: id, Code: UnknownExitCode, At: time.Now()}, true
				}
			}
			r.logger.Debug("containerd still unreachable", "task_id", id,
				"error", err)
		}
	}
}

func exitOf(id string, st client.ExitStatus) Exit {
	at := st.ExitTime()
	if at.IsZero() {
		at = time.Now()
	}
	return Exit{ID: id, Code: int(st.ExitCode()), At: at}
}

func (r *Containerd) setRetrying(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.retrying[id] = true
		return
	}
	delete(r.retrying, id)
}

// noteExit keeps the status of a deleted task for its watcher. It is
// kept whenever a watcher exists, not only while one is retrying: the
// watcher's Wait may break only as the task is deleted, and start its
// retry after this call. untrack drops it when the watcher ends.
func (r *Containerd) noteExit(id string, st *client.ExitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watched[id] > 0 {
		r.lost[id] = exitOf(id, *st)
	}
}

// lostTaskGrace is how long a watcher keeps asking a restarted
// containerd for a task it does not list before calling its exit unknown.
const lostTaskGrace = 5 * time.Second

// lostExit returns and forgets the exit Stop saw for id, if any.
func (r *Containerd) lostExit(id string) (Exit, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.lost[id]
	delete(r.lost, id)
	return e, ok
}
