package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// The JSON that -o json prints. These shapes are a promise to scripts:
// add fields only where a comment allows it, never rename or retype one.
// Numbers are JSON numbers (protojson would print 64-bit ones as strings).

// clusterStatusJSON is `cluster status -o json`. Fields beyond leader and
// the four of each manager may be added.
type clusterStatusJSON struct {
	Leader   string        `json:"leader"`
	Managers []managerJSON `json:"managers"`
}

// managerJSON is one manager of clusterStatusJSON. The engine fields
// are its rollout engine: whether it runs now (only on the leader) and
// its passes and proposals since the process started.
type managerJSON struct {
	Name            string `json:"name"`
	Address         string `json:"address"`
	State           string `json:"state"`
	Voter           bool   `json:"voter"`
	Term            uint64 `json:"term"`
	AppliedIndex    uint64 `json:"applied_index"`
	EngineEnabled   bool   `json:"engine_enabled"`
	EngineSteps     uint64 `json:"engine_steps"`
	EngineProposals uint64 `json:"engine_proposals"`
}

// nodeJSON is one entry of `node ls -o json`.
type nodeJSON struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Address string `json:"address"`
	Status  string `json:"status"`
}

// appStatusJSON is `app status NAME -o json`.
type appStatusJSON struct {
	Name       string          `json:"name"`
	Version    uint64          `json:"version"`
	Replicas   int32           `json:"replicas"`
	Tasks      []taskJSON      `json:"tasks"`
	Deployment *deploymentJSON `json:"deployment"`
}

type taskJSON struct {
	ID        string            `json:"id"`
	Node      string            `json:"node"`
	Version   uint64            `json:"version"`
	Image     string            `json:"image"`
	State     string            `json:"state"`
	Healthy   bool              `json:"healthy"`
	Addresses map[string]string `json:"addresses"`
	Message   string            `json:"message"`
	ExitCode  int32             `json:"exit_code"`
}

type deploymentJSON struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	FromVersion uint64 `json:"from_version"`
	ToVersion   uint64 `json:"to_version"`
	Description string `json:"description"`
}

// appSummaryJSON is one entry of `app ls -o json`.
type appSummaryJSON struct {
	Name             string `json:"name"`
	Version          uint64 `json:"version"`
	Replicas         int32  `json:"replicas"`
	Running          int32  `json:"running"`
	Healthy          int32  `json:"healthy"`
	Image            string `json:"image"`
	DeploymentStatus string `json:"deployment_status"`
}

// deployJSON is `app deploy -o json`.
type deployJSON struct {
	App          string `json:"app"`
	Version      uint64 `json:"version"`
	DeploymentID string `json:"deployment_id"`
	Changed      bool   `json:"changed"`
}

func toClusterStatus(r *pb.ClusterStatusResponse) clusterStatusJSON {
	out := clusterStatusJSON{Leader: r.GetLeader(), Managers: []managerJSON{}}
	for _, m := range r.GetManagers() {
		out.Managers = append(out.Managers, managerJSON{
			Name: m.GetName(), Address: m.GetAddress(), State: m.GetState(),
			Voter: m.GetVoter(), Term: m.GetTerm(), AppliedIndex: m.GetAppliedIndex(),
			EngineEnabled: m.GetEngineEnabled(), EngineSteps: m.GetEngineSteps(),
			EngineProposals: m.GetEngineProposals(),
		})
	}
	return out
}

func toNodes(r *pb.ListNodesResponse) []nodeJSON {
	out := []nodeJSON{}
	for _, n := range r.GetNodes() {
		out = append(out, nodeJSON{
			Name: n.GetName(), Role: n.GetRole(),
			Address: n.GetAddress(), Status: n.GetStatus(),
		})
	}
	return out
}

func toAppStatus(r *pb.AppStatusResponse) appStatusJSON {
	app := r.GetApp()
	out := appStatusJSON{
		Name:     app.GetName(),
		Version:  app.GetVersion(),
		Replicas: specOf(app, app.GetVersion()).GetReplicas(),
		Tasks:    []taskJSON{},
	}
	for _, t := range r.GetTasks() {
		out.Tasks = append(out.Tasks, taskJSON{
			ID: t.GetId(), Node: t.GetNode(), Version: t.GetVersion(),
			Image: t.GetSpec().GetImage(), State: t.GetState(),
			Healthy: t.GetHealthy(), Addresses: addresses(t),
			Message: t.GetMessage(), ExitCode: t.GetExitCode(),
		})
	}
	if d := r.GetDeployment(); d != nil {
		out.Deployment = &deploymentJSON{
			ID: d.GetId(), Status: d.GetStatus(), FromVersion: d.GetFromVersion(),
			ToVersion: d.GetToVersion(), Description: d.GetDescription(),
		}
	}
	return out
}

func toAppSummaries(r *pb.ListAppsResponse) []appSummaryJSON {
	out := []appSummaryJSON{}
	for _, a := range r.GetApps() {
		out = append(out, appSummaryJSON{
			Name: a.GetName(), Version: a.GetVersion(), Replicas: a.GetReplicas(),
			Running: a.GetRunning(), Healthy: a.GetHealthy(), Image: a.GetImage(),
			DeploymentStatus: a.GetDeploymentStatus(),
		})
	}
	return out
}

// specOf returns the spec of one version of app, nil if it is not there.
func specOf(app *pb.App, version uint64) *pb.AppSpec {
	for _, v := range app.GetVersions() {
		if v.GetVersion() == version {
			return v.GetSpec()
		}
	}
	return nil
}

// addresses maps each port name of a task to "ip:port".
func addresses(t *pb.Task) map[string]string {
	out := map[string]string{}
	for name, port := range t.GetPorts() {
		out[name] = net.JoinHostPort(t.GetAddress(), strconv.Itoa(int(port)))
	}
	return out
}

// writeJSON prints v indented, with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, aligned in columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// orDash shows an empty cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printClusterStatus(w io.Writer, s clusterStatusJSON) error {
	fmt.Fprintf(w, "Leader: %s\n\n", orDash(s.Leader))
	rows := make([][]string, 0, len(s.Managers))
	for _, m := range s.Managers {
		engine := "-"
		if m.State != "unreachable" {
			engine = engineState(m.EngineEnabled)
		}
		rows = append(rows, []string{
			m.Name, m.Address, m.State, strconv.FormatBool(m.Voter),
			fmt.Sprint(m.Term), fmt.Sprint(m.AppliedIndex), engine,
		})
	}
	header := []string{"NAME", "ADDRESS", "STATE", "VOTER", "TERM", "APPLIED", "ENGINE"}
	return table(w, header, rows)
}

func printNodes(w io.Writer, nodes []nodeJSON) error {
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		rows = append(rows, []string{n.Name, n.Role, n.Address, n.Status})
	}
	return table(w, []string{"NAME", "ROLE", "ADDRESS", "STATUS"}, rows)
}

func printApps(w io.Writer, apps []appSummaryJSON) error {
	rows := make([][]string, 0, len(apps))
	for _, a := range apps {
		rows = append(rows, []string{
			a.Name, fmt.Sprint(a.Version),
			fmt.Sprintf("%d/%d", a.Healthy, a.Replicas), fmt.Sprint(a.Running),
			a.Image, orDash(a.DeploymentStatus),
		})
	}
	header := []string{"NAME", "VERSION", "HEALTHY", "RUNNING", "IMAGE", "DEPLOYMENT"}
	return table(w, header, rows)
}

func printAppStatus(w io.Writer, s appStatusJSON) error {
	fmt.Fprintf(w, "App:        %s\n", s.Name)
	fmt.Fprintf(w, "Version:    %d\n", s.Version)
	fmt.Fprintf(w, "Replicas:   %d\n", s.Replicas)
	if d := s.Deployment; d != nil {
		fmt.Fprintf(w, "Deployment: %s %s, v%d -> v%d", d.ID, d.Status, d.FromVersion, d.ToVersion)
		if d.Description != "" {
			fmt.Fprintf(w, ": %s", d.Description)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "Deployment: -")
	}
	fmt.Fprintln(w)

	rows := make([][]string, 0, len(s.Tasks))
	for _, t := range s.Tasks {
		state := t.State
		// Exit 0 on a failed task means it never ran (a pull error,
		// say): no exit code is worth showing then.
		finished := t.State == pb.TaskFailed || t.State == pb.TaskStopped
		if finished && t.ExitCode != 0 {
			state = fmt.Sprintf("%s (exit %d)", t.State, t.ExitCode)
		}
		rows = append(rows, []string{
			t.ID, orDash(t.Node), fmt.Sprint(t.Version), state,
			strconv.FormatBool(t.Healthy), orDash(joinAddrs(t.Addresses)),
			orDash(t.Message),
		})
	}
	header := []string{"TASK", "NODE", "VERSION", "STATE", "HEALTHY", "ADDRESSES", "MESSAGE"}
	return table(w, header, rows)
}

// joinAddrs shows a task's addresses as "http=ip:port,..." sorted by name.
func joinAddrs(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		names[i] = n + "=" + m[n]
	}
	return strings.Join(names, ",")
}

// show GETs path into resp, turns it into its view and prints the view as
// JSON with -o json, or with table otherwise.
func show[R proto.Message, V any](co *clientOpts, c *cli.Context, path string,
	resp R, view func(R) V, table func(io.Writer, V) error) error {
	cl, err := co.client()
	if err != nil {
		return err
	}
	if err := cl.call(c.Context, "GET", path, nil, resp); err != nil {
		return err
	}
	v := view(resp)
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, v)
	}
	return table(c.App.Writer, v)
}
