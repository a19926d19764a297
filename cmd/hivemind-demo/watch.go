package main

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hivemind-orch/hivemind/internal/cluster"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// apiClient reads the REST API of the managers directly (GET /v1/...),
// which is cheaper than running the CLI every 100ms and shows fields the
// CLI's JSON leaves out (desired state, out_of_rotation and its time).
var apiClient = &http.Client{Timeout: time.Second}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// fetch GETs path from the first running manager (other than skip) into
// a proto message.
func fetch(c *cluster.Cluster, skip, path string, into func([]byte) error) error {
	var last error = fmt.Errorf("no manager running")
	for _, m := range c.Managers() {
		if m.Name == skip || !c.Running(m.Name) {
			continue
		}
		if last = fetchAt(m, path, into); last == nil {
			return nil
		}
	}
	return last
}

func fetchAt(m *cluster.Member, path string, into func([]byte) error) error {
	resp, err := apiClient.Get(m.Addr() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s at %s: %s: %s", path, m.Name, resp.Status, strings.TrimSpace(string(b)))
	}
	return into(b)
}

// appStatus is GET /v1/apps/NAME from the first running manager.
func appStatus(c *cluster.Cluster, name string) (*pb.AppStatusResponse, error) {
	var st pb.AppStatusResponse
	err := fetch(c, "", "/v1/apps/"+name, func(b []byte) error { return unmarshal.Unmarshal(b, &st) })
	return &st, err
}

// leaderSeenBy is the leader that manager m names ("" if none).
func leaderSeenBy(m *cluster.Member) (string, error) {
	var st pb.ClusterStatusResponse
	err := fetchAt(m, "/v1/cluster/status", func(b []byte) error { return unmarshal.Unmarshal(b, &st) })
	return st.GetLeader(), err
}

// taskSeen is what the watcher saw of one task, in order.
type taskSeen struct {
	id, node  string
	version   uint64
	firstSeen time.Time
	key       string   // state, health, desired and rotation, to spot a change
	states    []string // each distinct state seen, in order
	last      *pb.Task
	outAt     time.Time // leader's out_of_rotation_at, zero until set
	stopAt    time.Time // leader's stop_requested_at, zero until set
	goneAt    time.Time // when it left app status
}

// watcher polls app status every 50ms and prints each change of a task
// the moment it sees it, so every timeline line is about its own time.
type watcher struct {
	d    *demo
	c    *cluster.Cluster
	app  string
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	silent  bool
	tasks   map[string]*taskSeen
	order   []string
	last    *pb.AppStatusResponse
	lastErr error
	depKey  string
}

func startWatcher(d *demo, app string) *watcher {
	w := &watcher{d: d, c: d.c, app: app, stop: make(chan struct{}), done: make(chan struct{}),
		tasks: map[string]*taskSeen{}, silent: true}
	go func() {
		defer close(w.done)
		for {
			st, err := appStatus(w.c, w.app)
			w.mu.Lock()
			if err == nil {
				w.update(st)
				w.last = st
			}
			w.lastErr = err
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *watcher) finish() {
	close(w.stop)
	<-w.done
}

// loud makes the watcher print the changes it sees from now on.
func (w *watcher) loud() {
	w.mu.Lock()
	w.silent = false
	w.mu.Unlock()
}

func (w *watcher) say(format string, args ...any) {
	if !w.silent && !w.d.stopping.Load() {
		w.d.say(format, args...)
	}
}

// update compares st with what was seen before; w.mu is held.
func (w *watcher) update(st *pb.AppStatusResponse) {
	now := time.Now()
	present := map[string]bool{}
	for _, t := range st.GetTasks() {
		present[t.GetId()] = true
		s := w.tasks[t.GetId()]
		if s == nil {
			s = &taskSeen{id: t.GetId(), node: t.GetNode(), version: t.GetVersion(), firstSeen: now}
			w.tasks[s.id] = s
			w.order = append(w.order, s.id)
		}
		prev := s.last
		s.last = t
		if t.GetStopRequestedAt() != 0 && s.stopAt.IsZero() {
			s.stopAt = time.Unix(0, t.GetStopRequestedAt())
		}
		if n := len(s.states); n == 0 || s.states[n-1] != t.GetState() {
			s.states = append(s.states, t.GetState())
		}
		key := fmt.Sprintf("%s/%t/%s/%t", t.GetState(), t.GetHealthy(), t.GetDesired(), t.GetOutOfRotation())
		if key == s.key {
			continue
		}
		s.key = key
		name := fmt.Sprintf("task %s (v%d) on %s", s.id, s.version, s.node)
		if prev == nil {
			w.say("  %s placed: %s%s", name, t.GetState(), healthWord(t))
			continue
		}
		if t.GetDesired() == pb.DesiredStop && prev.GetDesired() != pb.DesiredStop {
			why := ""
			if m := t.GetMessage(); m != "" {
				why = " (" + m + ")"
			}
			w.say("  %s told to stop at %s, the leader's time%s; it leaves every ingress before it is stopped",
				name, w.d.at(s.stopAt), why)
		}
		if t.GetOutOfRotation() && !prev.GetOutOfRotation() {
			s.outAt = time.Unix(0, t.GetOutOfRotationAt())
			w.say("  %s out of rotation: every live worker's ingress and DNS confirmed they dropped it (leader's time %s)",
				name, w.d.at(s.outAt))
		}
		if t.GetState() != prev.GetState() || t.GetHealthy() != prev.GetHealthy() {
			w.say("  %s: %s%s%s", name, t.GetState(), healthWord(t), stateNote(t))
		}
	}
	for _, id := range w.order {
		s := w.tasks[id]
		if !present[id] && s.goneAt.IsZero() {
			s.goneAt = now
			s.states = append(s.states, "gone")
			w.say("  task %s (v%d) on %s gone from app status (last seen %s)", id, s.version, s.node,
				s.last.GetState())
		}
	}
	if dep := st.GetDeployment(); dep != nil {
		key := dep.GetId() + "/" + dep.GetStatus()
		if key != w.depKey {
			w.depKey = key
			w.say("  deployment %s v%d -> v%d: %s %s", dep.GetId(), dep.GetFromVersion(), dep.GetToVersion(),
				dep.GetStatus(), dep.GetDescription())
		}
	}
}

func healthWord(t *pb.Task) string {
	if t.GetHealthy() {
		return ", healthy"
	}
	return ""
}

func stateNote(t *pb.Task) string {
	switch t.GetState() {
	case pb.TaskDraining:
		return " (still running, waiting to leave rotation and for open requests, up to drain_timeout)"
	case pb.TaskStopping:
		return " (stop signal sent)"
	}
	return ""
}

// snapshot returns the last app status seen and its tasks' histories.
func (w *watcher) snapshot() (*pb.AppStatusResponse, map[string]taskSeen) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]taskSeen{}
	for id, s := range w.tasks {
		cp := *s
		cp.states = append([]string(nil), s.states...)
		out[id] = cp
	}
	return w.last, out
}

// waitFor polls the watcher's view every 50ms until cond holds.
func (w *watcher) waitFor(timeout time.Duration, cond func(*pb.AppStatusResponse) error) (*pb.AppStatusResponse, error) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		st, fetchErr := w.last, w.lastErr
		w.mu.Unlock()
		err := fmt.Errorf("no app status yet")
		if st != nil {
			err = cond(st)
		}
		if err == nil {
			return st, nil
		}
		if fetchErr != nil {
			err = fmt.Errorf("%w (last app status call: %v)", err, fetchErr)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settled is nil when the app runs exactly its replicas as healthy tasks
// of version, nothing else, and its latest deployment is not running.
func settled(st *pb.AppStatusResponse, version uint64, replicas int) error {
	if v := st.GetApp().GetVersion(); v != version {
		return fmt.Errorf("app version %d, want %d", v, version)
	}
	if d := st.GetDeployment(); d != nil && d.GetStatus() == "running" {
		return fmt.Errorf("deployment %s to v%d still running", d.GetId(), d.GetToVersion())
	}
	n := 0
	for _, t := range live(st) {
		if t.GetVersion() != version || t.GetState() != pb.TaskRunning || !t.GetHealthy() {
			return fmt.Errorf("task %s on %s is v%d %s healthy=%t", t.GetId(), t.GetNode(),
				t.GetVersion(), t.GetState(), t.GetHealthy())
		}
		n++
	}
	if n != replicas {
		return fmt.Errorf("%d healthy tasks, want %d", n, replicas)
	}
	return nil
}

// live is the tasks of st that are not stopped or failed.
func live(st *pb.AppStatusResponse) []*pb.Task {
	var out []*pb.Task
	for _, t := range st.GetTasks() {
		if t.GetState() != pb.TaskStopped && t.GetState() != pb.TaskFailed {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out
}

// addr is a task's "ip:port" for its http port.
func addr(t *pb.Task) string {
	return fmt.Sprintf("%s:%d", t.GetAddress(), t.GetPorts()["http"])
}

// logged is one line a worker logged about a task.
type logged struct {
	at   time.Time
	what string
}

// workerLog is what the worker node logged about task: its state reports
// and the moment it saw the task out of rotation, in order.
func workerLog(c *cluster.Cluster, node, task string) []logged {
	lines, err := c.Grep(node, "task_id="+task)
	if err != nil {
		return nil
	}
	var out []logged
	for _, l := range lines {
		ts, rest, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(rest, "out of rotation"):
			out = append(out, logged{at, "out of rotation here"})
		case strings.Contains(rest, "task state:"):
			_, st, _ := strings.Cut(rest, " state=")
			st, _, _ = strings.Cut(st, " ")
			out = append(out, logged{at, st})
		}
	}
	return out
}
