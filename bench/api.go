package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// The bench polls the managers' HTTP API (the REST gateway) directly: it
// is the call `hivemind app status -o json` and `cluster status -o json`
// make, without a process start per poll. Starting the CLI costs tens of
// milliseconds on this machine (measured and printed in the header), which
// would be measurement error at a 20-50ms poll interval. The REST answer
// also carries what the CLI's JSON leaves out: the deployment's counters
// and each task's healthy_since and desired state.

// restStatus is GET /v1/apps/NAME (protojson, proto field names).
type restStatus struct {
	App struct {
		Name    string      `json:"name"`
		Version cluster.Num `json:"version"`
	} `json:"app"`
	Tasks      []restTask      `json:"tasks"`
	Deployment *restDeployment `json:"deployment"`
}

type restTask struct {
	ID           string           `json:"id"`
	Node         string           `json:"node"`
	Version      cluster.Num      `json:"version"`
	Address      string           `json:"address"`
	Ports        map[string]int32 `json:"ports"`
	Desired      string           `json:"desired"`
	State        string           `json:"state"`
	Healthy      bool             `json:"healthy"`
	HealthySince cluster.Num      `json:"healthy_since"`
	Message      string           `json:"message"`
}

type restDeployment struct {
	ID          string      `json:"id"`
	Status      string      `json:"status"`
	ToVersion   cluster.Num `json:"to_version"`
	Placed      int32       `json:"placed"`
	Healthy     int32       `json:"healthy"`
	Failures    int32       `json:"failures"`
	RollingBack bool        `json:"rolling_back"`
	Description string      `json:"description"`
}

// restCluster is GET /v1/cluster/status.
type restCluster struct {
	Leader   string `json:"leader"`
	Managers []struct {
		Name         string      `json:"name"`
		State        string      `json:"state"`
		AppliedIndex cluster.Num `json:"applied_index"`
		LastIndex    cluster.Num `json:"last_index"`
	} `json:"managers"`
}

// live reports whether a task is neither stopped nor failed.
func (t restTask) live() bool {
	return t.State != "stopped" && t.State != "failed"
}

// httpAddr is the task's "http" port as IP:PORT, or "".
func (t restTask) httpAddr() string {
	p, ok := t.Ports["http"]
	if !ok || t.Address == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", t.Address, p)
}

// api talks to the managers' HTTP API.
type api struct {
	client *http.Client
}

func newAPI() *api {
	return &api{client: &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}}
}

// get decodes GET base+path into v; a status other than 200 is an error.
func (a *api) get(base, path string, v any) error {
	resp, err := a.client.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s%s: %s: %s", base, path, resp.Status,
			bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

func (a *api) appStatus(base, name string) (*restStatus, error) {
	var st restStatus
	return &st, a.get(base, "/v1/apps/"+name, &st)
}

func (a *api) clusterStatus(base string) (*restCluster, error) {
	var st restCluster
	return &st, a.get(base, "/v1/cluster/status", &st)
}

// answers reports whether GET http://addr/ answers 200.
func (a *api) answers(addr string) bool {
	resp, err := a.client.Get("http://" + addr + "/")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
