package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The types below are the JSON that `hivemind ... -o json` prints, as
// issue 2 fixes it for scripts. Only the fields the harness and the tests
// read are declared; the CLI may print more.

// ClusterStatus is `hivemind cluster status -o json`.
type ClusterStatus struct {
	Leader   string          `json:"leader"`
	Managers []ManagerStatus `json:"managers"`
}

// ManagerStatus is one manager in ClusterStatus.
type ManagerStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"`
	Voter   bool   `json:"voter"`
}

// Node is one entry of `hivemind node ls -o json`.
type Node struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Address string `json:"address"`
	Status  string `json:"status"`
}

// AppStatus is `hivemind app status NAME -o json`.
type AppStatus struct {
	Name       string      `json:"name"`
	Version    Num         `json:"version"`
	Replicas   Num         `json:"replicas"`
	Tasks      []Task      `json:"tasks"`
	Deployment *Deployment `json:"deployment"`
}

// Task is one current task in AppStatus.
type Task struct {
	ID        string            `json:"id"`
	Node      string            `json:"node"`
	Version   Num               `json:"version"`
	Image     string            `json:"image"`
	State     string            `json:"state"`
	Healthy   bool              `json:"healthy"`
	Addresses map[string]string `json:"addresses"`
	Message   string            `json:"message"`
	ExitCode  Num               `json:"exit_code"`
}

// Deployment is the latest deployment of an app in AppStatus.
type Deployment struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	FromVersion Num    `json:"from_version"`
	ToVersion   Num    `json:"to_version"`
	Description string `json:"description"`
}

// AppSummary is one entry of `hivemind app ls -o json`.
type AppSummary struct {
	Name             string `json:"name"`
	Version          Num    `json:"version"`
	Replicas         Num    `json:"replicas"`
	Running          Num    `json:"running"`
	Healthy          Num    `json:"healthy"`
	Image            string `json:"image"`
	DeploymentStatus string `json:"deployment_status"`
}

// Num is an integer that decodes from a JSON number or from a string holding
// one (protojson prints 64-bit integers as strings).
type Num int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *Num) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*n = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("number %q: %w", b, err)
	}
	*n = Num(v)
	return nil
}

// Live returns the tasks of s that are not stopped or failed.
func (s *AppStatus) Live() []Task {
	var out []Task
	for _, t := range s.Tasks {
		if t.State != "stopped" && t.State != "failed" {
			out = append(out, t)
		}
	}
	return out
}

// Settled reports, as an error naming what is not yet true, whether the app
// runs exactly replicas healthy tasks of version and no other live task,
// and its latest deployment (if any) is no longer running.
func (s *AppStatus) Settled(version int64) error {
	if int64(s.Version) != version {
		return fmt.Errorf("app %q: version %d, want %d", s.Name, s.Version, version)
	}
	if d := s.Deployment; d != nil && d.Status == "running" {
		return fmt.Errorf("app %q: deployment %s to v%d still running", s.Name, d.ID, d.ToVersion)
	}
	healthy := 0
	for _, t := range s.Live() {
		if int64(t.Version) != version {
			return fmt.Errorf("app %q: task %s on %s is v%d (%s), want only v%d",
				s.Name, t.ID, t.Node, t.Version, t.State, version)
		}
		if t.State != "running" || !t.Healthy {
			return fmt.Errorf("app %q: task %s on %s is %s, healthy=%t (%s)",
				s.Name, t.ID, t.Node, t.State, t.Healthy, t.Message)
		}
		healthy++
	}
	if healthy != int(s.Replicas) {
		return fmt.Errorf("app %q: %d healthy tasks, want %d", s.Name, healthy, s.Replicas)
	}
	return nil
}
