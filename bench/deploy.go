package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/internal/testenv"
)

// ctrNamespace is the containerd namespace of the ctr baseline, apart
// from the workers' own so that no agent sees those containers.
var ctrNamespace = fmt.Sprintf("hivemind-bench-%d", os.Getpid())

const (
	deployReplicas = 3
	deployPoll     = 50 * time.Millisecond
)

// benchDeploy times `app deploy` of 3 replicas until app status shows all
// 3 running and healthy, and the same 3 containers started with `ctr run
// -d` until each answers HTTP. Runs alternate between the two.
func (b *bench) benchDeploy() error {
	var healthy, answered, cli, ctrAll []float64
	for i := 1; i <= b.opts.runs; i++ {
		r, err := b.deployOnce(fmt.Sprintf("deploy%d", i))
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		b.say("run %d: app deploy returned after %s, all %d tasks answer HTTP after %s, all healthy in app status after %s",
			i, r.cli.Round(time.Millisecond), deployReplicas,
			r.answered.Round(time.Millisecond), r.healthy.Round(time.Millisecond))
		healthy = append(healthy, secs(r.healthy))
		answered = append(answered, secs(r.answered))
		cli = append(cli, secs(r.cli))

		d, err := b.ctrOnce(i)
		if err != nil {
			return fmt.Errorf("run %d: ctr baseline: %w", i, err)
		}
		b.say("run %d: ctr run -d of %d containers until each answers HTTP: %s",
			i, deployReplicas, d.Round(time.Millisecond))
		ctrAll = append(ctrAll, secs(d))
	}

	b.add(row{bench: "1 deploy", what: "hivemind: `app deploy` (3 replicas) until all 3 healthy in app status",
		samples: healthy, goal: "none set; compare with ctr below"})
	b.add(row{bench: "1 deploy", what: "hivemind: `app deploy` until all 3 tasks answer HTTP", samples: answered})
	b.add(row{bench: "1 deploy", what: "hivemind: `app deploy` command returns", samples: cli})
	b.add(row{bench: "1 deploy", what: "ctr: 3 × `ctr run -d --net-host` (in parallel) until each answers HTTP",
		samples: ctrAll})
	b.note("deploy: the image was pulled into every containerd beforehand, for hivemind and for ctr alike; hivemind's agent still asks the registry (local, loopback) for the manifest before each start, ctr does not")
	b.note("deploy: spec: the harness's web app (health GET /healthz every 500ms, timeout 1s); app status polled over HTTP every %s; ctr containers spread over both workers' containerds like the tasks, each polled every %s", deployPoll, deployPoll)
	return nil
}

type deployResult struct {
	cli, answered, healthy time.Duration
}

// deployOnce deploys a new app of 3 replicas, waits until all are healthy,
// then removes it and waits until its containers are gone.
func (b *bench) deployOnce(name string) (deployResult, error) {
	var r deployResult
	_, base, err := b.leaderBase()
	if err != nil {
		return r, err
	}
	spec := cluster.WebApp{Name: name, Image: b.c.Image("v1"), Replicas: deployReplicas}
	path := filepath.Join(b.c.Dir, name+".yaml")
	if err := os.WriteFile(path, []byte(spec.YAML()), 0o644); err != nil {
		return r, err
	}

	t0 := time.Now()
	if _, err := b.c.CLI("app", "deploy", "-f", path); err != nil {
		return r, err
	}
	r.cli = time.Since(t0)

	answered := map[string]bool{}
	deadline := t0.Add(90 * time.Second)
	var last string
	for r.healthy == 0 || r.answered == 0 {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("app %s not healthy after 90s: %s", name, last)
		}
		st, err := b.api.appStatus(base, name)
		now := time.Since(t0)
		if err != nil {
			last = err.Error()
			time.Sleep(deployPoll)
			continue
		}
		healthy := 0
		for _, t := range st.Tasks {
			if !t.live() {
				continue
			}
			if t.State == "running" && t.Healthy {
				healthy++
			}
			if a := t.httpAddr(); a != "" && !answered[t.ID] &&
				t.State == "running" && b.api.answers(a) {
				answered[t.ID] = true
			}
		}
		last = fmt.Sprintf("%d of %d healthy, %d answer HTTP", healthy, deployReplicas, len(answered))
		if r.healthy == 0 && healthy == deployReplicas {
			r.healthy = now
		}
		if r.answered == 0 && len(answered) == deployReplicas {
			r.answered = time.Since(t0)
		}
		time.Sleep(deployPoll)
	}

	if _, err := b.c.CLI("app", "rm", name); err != nil {
		return r, err
	}
	return r, b.waitNoContainers()
}

// waitNoContainers waits until no worker's containerd holds a container.
func (b *bench) waitNoContainers() error {
	return cluster.WaitFor(60*time.Second, func() error {
		all, err := b.c.AllContainers()
		if err != nil {
			return err
		}
		for w, ids := range all {
			if len(ids) > 0 {
				return fmt.Errorf("%s still has containers %v", w, ids)
			}
		}
		return nil
	})
}

// ctrOnce starts 3 containers of web:v1 with `ctr run -d --net-host`, in
// parallel, spread over the workers' containerds, and returns the time
// until each answered HTTP. It removes them afterwards.
func (b *bench) ctrOnce(run int) (time.Duration, error) {
	workers := b.c.Workers()
	type ctrBox struct {
		sock, id, addr string
	}
	var boxes []ctrBox
	for i := range deployReplicas {
		w := workers[i%len(workers)]
		port, err := testenv.FreePort(w.IP)
		if err != nil {
			return 0, err
		}
		boxes = append(boxes, ctrBox{
			sock: w.Containerd.Socket,
			id:   fmt.Sprintf("bench-%d-%d", run, i),
			addr: fmt.Sprintf("%s:%d", w.IP, port),
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer func() {
		for _, c := range boxes {
			b.ctrRemove(c.sock, c.id)
		}
	}()

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(boxes))
	took := make([]time.Duration, len(boxes))
	for i, c := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ctr(ctx, c.sock, ctrNamespace, "run", "-d", "--net-host",
				"--env", "HIVEMIND_ADDR_HTTP="+c.addr,
				"--env", "HIVEMIND_TASK_ID="+c.id,
				b.c.Image("v1"), c.id)
			if err != nil {
				errs[i] = err
				return
			}
			for !b.api.answers(c.addr) {
				if ctx.Err() != nil {
					errs[i] = fmt.Errorf("container %s at %s never answered", c.id, c.addr)
					return
				}
				time.Sleep(deployPoll)
			}
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	var all time.Duration
	for i := range boxes {
		if errs[i] != nil {
			return 0, errs[i]
		}
		all = max(all, took[i])
	}
	return all, nil
}

// ctrRemove kills and deletes a ctr container; failures are reported
// and left to the containerd's Stop.
func (b *bench) ctrRemove(sock, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ctr(ctx, sock, ctrNamespace, "task", "rm", "-f", id); err != nil {
		b.say("cleanup: %v", err)
	}
	if _, err := ctr(ctx, sock, ctrNamespace, "containers", "rm", id); err != nil {
		b.say("cleanup: %v", err)
	}
}

// deployJSON is `app deploy -o json`.
type deployJSON struct {
	App          string `json:"app"`
	Version      int64  `json:"version"`
	DeploymentID string `json:"deployment_id"`
	Changed      bool   `json:"changed"`
}

// deploySpec writes spec to a file and runs `app deploy -o json -f FILE`.
func (b *bench) deploySpec(spec cluster.WebApp, tag string) (*deployJSON, error) {
	path := filepath.Join(b.c.Dir, fmt.Sprintf("%s-%s.yaml", spec.Name, tag))
	if err := os.WriteFile(path, []byte(spec.YAML()), 0o644); err != nil {
		return nil, err
	}
	out, err := b.c.CLI("app", "deploy", "-o", "json", "-f", path)
	if err != nil {
		return nil, err
	}
	var d deployJSON
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("app deploy -o json: %q: %w", out, err)
	}
	return &d, nil
}
