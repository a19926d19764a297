package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Containers lists the IDs of the containers in a worker's containerd
// (its namespace), sorted, whether their task runs or not.
func (c *Cluster) Containers(worker string) ([]string, error) {
	var ids []string
	err := c.withContainerd(worker, func(ctx context.Context, ctrs []client.Container) error {
		for _, ctr := range ctrs {
			ids = append(ids, ctr.ID())
		}
		return nil
	})
	sort.Strings(ids)
	return ids, err
}

// TaskPIDs maps each container in a worker's containerd that has a task
// to its init process ID: a container restarted under the same ID shows a
// new PID.
func (c *Cluster) TaskPIDs(worker string) (map[string]uint32, error) {
	pids := map[string]uint32{}
	err := c.withContainerd(worker, func(ctx context.Context, ctrs []client.Container) error {
		for _, ctr := range ctrs {
			task, err := ctr.Task(ctx, nil)
			if err != nil {
				continue // a container without a task
			}
			pids[ctr.ID()] = task.Pid()
		}
		return nil
	})
	return pids, err
}

// withContainerd calls fn with the containers of a worker's containerd,
// through a client of its own, in the worker's namespace.
func (c *Cluster) withContainerd(worker string, fn func(context.Context, []client.Container) error) error {
	w, err := c.Member(worker)
	if err != nil {
		return err
	}
	if w.Containerd == nil {
		return fmt.Errorf("%s: no containerd", worker)
	}
	cl, err := client.New(w.Containerd.Socket, client.WithTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("%s: containerd: %w", worker, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, w.Containerd.Namespace)
	ctrs, err := cl.Containers(ctx)
	if err != nil {
		return fmt.Errorf("%s: containers: %w", worker, err)
	}
	return fn(ctx, ctrs)
}

// AllContainers lists the containers of every worker, by worker name.
func (c *Cluster) AllContainers() (map[string][]string, error) {
	out := map[string][]string{}
	for _, w := range c.Workers() {
		ids, err := c.Containers(w.Name)
		if err != nil {
			return nil, err
		}
		out[w.Name] = ids
	}
	return out, nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// Get does an HTTP GET of http://addr+path and returns the body; a status
// other than 200 is an error.
func Get(addr, path string) (string, error) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// CheckAnswers does a GET / on the "http" address of every live task of
// st and checks that each answers "VERSION=<image> TASK=<its id>".
func CheckAnswers(st *AppStatus, image string) error {
	live := st.Live()
	if len(live) == 0 {
		return fmt.Errorf("app %q: no live task", st.Name)
	}
	for _, t := range live {
		addr := t.Addresses["http"]
		if addr == "" {
			return fmt.Errorf("app %q: task %s has no http address (%v)",
				st.Name, t.ID, t.Addresses)
		}
		body, err := Get(addr, "/")
		if err != nil {
			return fmt.Errorf("app %q: task %s: %w", st.Name, t.ID, err)
		}
		want := fmt.Sprintf("VERSION=%s TASK=%s", image, t.ID)
		if body != want {
			return fmt.Errorf("app %q: task %s at %s answers %q, want %q",
				st.Name, t.ID, addr, body, want)
		}
	}
	return nil
}
