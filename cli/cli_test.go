package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// gatewayJSON marshals like the rpc package's gateway: proto names,
// zero values included, 64-bit integers as strings.
var gatewayJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// request is what the fake gateway saw.
type request struct {
	method, path string
	body         []byte
}

// fakeGateway answers "METHOD /path" routes with fixed replies and
// records every request.
type fakeGateway struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex // the server reads routes while tests add them
	routes map[string]func(w http.ResponseWriter)
	reqs   []request
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{t: t, routes: map[string]func(http.ResponseWriter){}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	g.reqs = append(g.reqs, request{r.Method, r.URL.Path, body})
	h, ok := g.routes[r.Method+" "+r.URL.Path]
	g.mu.Unlock()

	if !ok {
		g.fail(w, http.StatusNotFound, 5, "Not Found")
		return
	}
	h(w)
}

// ok answers a route with msg as the gateway would.
func (g *fakeGateway) ok(route string, msg proto.Message) {
	b, err := gatewayJSON.Marshal(msg)
	if err != nil {
		g.t.Fatal(err)
	}
	g.handle(route, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
}

// handle answers a route with h.
func (g *fakeGateway) handle(route string, h func(w http.ResponseWriter)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.routes[route] = h
}

// err answers a route with the gateway's error JSON.
func (g *fakeGateway) err(route string, status, code int, msg string) {
	g.handle(route, func(w http.ResponseWriter) { g.fail(w, status, code, msg) })
}

func (g *fakeGateway) fail(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "details": []any{}})
}

func (g *fakeGateway) requests() []request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]request(nil), g.reqs...)
}

// run runs the CLI with args and returns stdout and the error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := App()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append([]string{"hivemind"}, args...))
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

// webStatus is an app with a rollout in progress.
func webStatus() *pb.AppStatusResponse {
	spec := func(image string, replicas int32) *pb.AppSpec {
		return &pb.AppSpec{Name: "web", Image: image, Replicas: replicas}
	}
	return &pb.AppStatusResponse{
		App: &pb.App{
			Name: "web", Version: 2, StableVersion: 1,
			Versions: []*pb.AppVersion{
				{Version: 1, Spec: spec("reg/web:v1", 3)},
				{Version: 2, Spec: spec("reg/web:v2", 2)},
			},
		},
		Tasks: []*pb.Task{
			{
				Id: "t1", App: "web", Version: 1, Spec: spec("reg/web:v1", 3),
				Node: "w1", Address: "127.0.0.2",
				Ports: map[string]int32{"http": 20000, "admin": 20001},
				State: pb.TaskRunning, Healthy: true,
			},
			{
				Id: "t2", App: "web", Version: 2, Spec: spec("reg/web:v2", 2),
				Node: "w2", Address: "127.0.0.3", Ports: map[string]int32{"http": 20000},
				State: pb.TaskFailed, ExitCode: 3, Message: "exited with 3",
			},
		},
		Deployment: &pb.Deployment{
			Id: "d2", App: "web", FromVersion: 1, ToVersion: 2,
			Status: pb.DeploymentRunning, Description: "batch 1 of 2",
		},
	}
}

// jsonEq compares JSON texts by value.
func jsonEq(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("JSON output:\n got %s\nwant %s", gb, wb)
	}
}

func TestJSONOutput(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("GET /v1/apps/web", webStatus())
	g.ok("GET /v1/apps/new", &pb.AppStatusResponse{App: &pb.App{Name: "new"}})
	g.ok("GET /v1/cluster/status", &pb.ClusterStatusResponse{
		Leader: "m1",
		Managers: []*pb.ManagerStatus{
			{Name: "m1", Address: "127.0.0.1:7072", State: "leader", Voter: true, Term: 4, AppliedIndex: 17,
				EngineEnabled: true, EngineSteps: 9, EngineProposals: 2},
			{Name: "m2", Address: "127.0.0.2:7072", State: "follower", Voter: true, Term: 4, AppliedIndex: 16},
		},
	})
	g.ok("GET /v1/nodes", &pb.ListNodesResponse{Nodes: []*pb.Node{
		{Name: "m1", Role: "manager", Address: "127.0.0.1", Status: "ready", RpcPort: 7071},
		{Name: "w1", Role: "worker", Address: "127.0.0.2", Status: "down"},
	}})
	g.ok("GET /v1/apps", &pb.ListAppsResponse{Apps: []*pb.AppSummary{
		{Name: "web", Version: 2, Replicas: 2, Running: 2, Healthy: 1, Image: "reg/web:v2",
			DeploymentStatus: "running"},
	}})

	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "app status",
			args: []string{"app", "status", "--addr", g.srv.URL, "-o", "json", "web"},
			want: `{"name":"web","version":2,"replicas":2,
				"tasks":[
				 {"id":"t1","node":"w1","version":1,"image":"reg/web:v1","state":"running","healthy":true,
				  "addresses":{"admin":"127.0.0.2:20001","http":"127.0.0.2:20000"},"message":"","exit_code":0},
				 {"id":"t2","node":"w2","version":2,"image":"reg/web:v2","state":"failed","healthy":false,
				  "addresses":{"http":"127.0.0.3:20000"},"message":"exited with 3","exit_code":3}],
				"deployment":{"id":"d2","status":"running","from_version":1,"to_version":2,
				  "description":"batch 1 of 2"}}`,
		},
		{
			name: "app status, flags after the name",
			args: []string{"app", "status", "new", "--addr=" + g.srv.URL, "--output", "json"},
			want: `{"name":"new","version":0,"replicas":0,"tasks":[],"deployment":null}`,
		},
		{
			name: "cluster status",
			args: []string{"cluster", "status", "--addr", g.srv.URL, "-o", "json"},
			want: `{"leader":"m1","managers":[
				{"name":"m1","address":"127.0.0.1:7072","state":"leader","voter":true,"term":4,"applied_index":17,
				 "engine_enabled":true,"engine_steps":9,"engine_proposals":2},
				{"name":"m2","address":"127.0.0.2:7072","state":"follower","voter":true,"term":4,"applied_index":16,
				 "engine_enabled":false,"engine_steps":0,"engine_proposals":0}]}`,
		},
		{
			name: "node ls",
			args: []string{"node", "ls", "--addr", g.srv.URL, "-o", "json"},
			want: `[{"name":"m1","role":"manager","address":"127.0.0.1","status":"ready"},
				{"name":"w1","role":"worker","address":"127.0.0.2","status":"down"}]`,
		},
		{
			name: "app ls",
			args: []string{"app", "ls", "--addr", g.srv.URL, "-o", "json"},
			want: `[{"name":"web","version":2,"replicas":2,"running":2,"healthy":1,
				"image":"reg/web:v2","deployment_status":"running"}]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			jsonEq(t, out, tt.want)
		})
	}
}

func TestEmptyListsAreJSONArrays(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("GET /v1/apps", &pb.ListAppsResponse{})
	g.ok("GET /v1/nodes", &pb.ListNodesResponse{})
	for _, cmd := range [][]string{{"app", "ls"}, {"node", "ls"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			out, err := run(t, append(cmd, "--addr", g.srv.URL, "-o", "json")...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if strings.TrimSpace(out) != "[]" {
				t.Fatalf("output %q, want []", out)
			}
		})
	}
}

func TestTableOutput(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("GET /v1/apps/web", webStatus())
	g.ok("GET /v1/apps", &pb.ListAppsResponse{Apps: []*pb.AppSummary{
		{Name: "web", Version: 2, Replicas: 2, Running: 2, Healthy: 1, Image: "reg/web:v2"},
	}})

	g.ok("GET /v1/nodes", &pb.ListNodesResponse{Nodes: []*pb.Node{
		{Name: "m1", Role: pb.RoleManager, Address: "127.0.0.1", Status: pb.NodeReady},
		{Name: "w1", Role: pb.RoleWorker, Address: "127.0.0.2", Status: pb.NodeDraining},
		{Name: "w2", Role: pb.RoleWorker, Address: "127.0.0.3", Status: pb.NodeDown},
	}})

	g.ok("GET /v1/cluster/status", &pb.ClusterStatusResponse{
		Leader: "m2",
		Managers: []*pb.ManagerStatus{
			{Name: "m1", Address: "127.0.0.1:7072", State: "follower", Voter: true, Term: 5,
				AppliedIndex: 30, EngineSteps: 40, EngineProposals: 6},
			{Name: "m2", Address: "127.0.0.2:7072", State: "leader", Voter: true, Term: 5,
				AppliedIndex: 30, EngineEnabled: true, EngineSteps: 12, EngineProposals: 3},
			{Name: "m3", Address: "127.0.0.3:7072", State: "unreachable", Voter: true},
		},
	})

	g.ok("GET /v1/apps/api", &pb.AppStatusResponse{
		App: &pb.App{Name: "api", Version: 1, Versions: []*pb.AppVersion{
			{Version: 1, Spec: &pb.AppSpec{Name: "api", Replicas: 1}}}},
		Tasks: []*pb.Task{
			{Id: "a1", App: "api", Version: 1, Node: "w1",
				State: pb.TaskFailed, Message: "pull api:v1: not found"},
			{Id: "a2", App: "api", Version: 1, Node: "w1",
				State: pb.TaskStopped, ExitCode: 143},
			{Id: "a3", App: "api", Version: 1, Node: "w2",
				State: pb.TaskStopped},
		},
	})

	tests := []struct {
		name string
		args []string
		want []string // lines, with runs of spaces squeezed to one
	}{
		{
			name: "app status",
			args: []string{"app", "status", "--addr", g.srv.URL, "web"},
			want: []string{
				"App: web",
				"Version: 2",
				"Replicas: 2",
				"Deployment: d2 running, v1 -> v2: batch 1 of 2",
				"",
				"TASK NODE VERSION STATE HEALTHY ADDRESSES MESSAGE",
				"t1 w1 1 running true admin=127.0.0.2:20001,http=127.0.0.2:20000 -",
				"t2 w2 2 failed (exit 3) false http=127.0.0.3:20000 exited with 3",
			},
		},
		{
			name: "app status shows only non-zero exit codes",
			args: []string{"app", "status", "--addr", g.srv.URL, "api"},
			want: []string{
				"App: api",
				"Version: 1",
				"Replicas: 1",
				"Deployment: -",
				"",
				"TASK NODE VERSION STATE HEALTHY ADDRESSES MESSAGE",
				"a1 w1 1 failed false - pull api:v1: not found",
				"a2 w1 1 stopped (exit 143) false - -",
				"a3 w2 1 stopped false - -",
			},
		},
		{
			name: "node ls shows a draining worker",
			args: []string{"node", "ls", "--addr", g.srv.URL},
			want: []string{
				"NAME ROLE ADDRESS STATUS",
				"m1 manager 127.0.0.1 ready",
				"w1 worker 127.0.0.2 draining",
				"w2 worker 127.0.0.3 down",
			},
		},
		{
			name: "app ls",
			args: []string{"app", "ls", "--addr", g.srv.URL},
			want: []string{
				"NAME VERSION HEALTHY RUNNING IMAGE DEPLOYMENT",
				"web 2 1/2 2 reg/web:v2 -",
			},
		},
		{
			name: "cluster status shows where the engine runs",
			args: []string{"cluster", "status", "--addr", g.srv.URL},
			want: []string{
				"Leader: m2",
				"",
				"NAME ADDRESS STATE VOTER TERM APPLIED ENGINE",
				"m1 127.0.0.1:7072 follower true 5 30 off",
				"m2 127.0.0.2:7072 leader true 5 30 on",
				"m3 127.0.0.3:7072 unreachable true 0 0 -",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
				got = append(got, strings.Join(strings.Fields(l), " "))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("table:\n%s\nwant (spaces squeezed):\n%s", out, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestJoinTokenPrintsOnlyTheToken(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("GET /v1/cluster/join-token/worker", &pb.JoinTokenResponse{Token: "HMW-abc.def"})

	out, err := run(t, "cluster", "join-token", "--addr", g.srv.URL, "worker")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if out != "HMW-abc.def\n" {
		t.Fatalf("output %q, want the token and a newline", out)
	}

	_, err = run(t, "cluster", "join-token", "--addr", g.srv.URL, "admin")
	if err == nil || !strings.Contains(err.Error(), `role "admin"`) {
		t.Fatalf("join-token admin: err %v, want one naming the role", err)
	}
}

func TestErrorsShowTheManagersMessage(t *testing.T) {
	g := newFakeGateway(t)
	g.err("GET /v1/apps/nope", http.StatusNotFound, 5, `app "nope" not found`)
	g.err("POST /v1/apps/web/scale", http.StatusBadRequest, 3, `app "web": replicas must not be negative`)
	g.err("POST /v1/apps/web/rollback", http.StatusServiceUnavailable, 14, "no leader")
	g.handle("DELETE /v1/apps/web", func(w http.ResponseWriter) {
		http.Error(w, "upstream broke\nmore", http.StatusBadGateway)
	})

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"404", []string{"app", "status", "nope"}, `app "nope" not found`},
		{"400", []string{"app", "scale", "web", "3"}, `app "web": replicas must not be negative`},
		{"503", []string{"app", "rollback", "web"}, "no leader"},
		{"plain text", []string{"app", "rm", "web"}, "upstream broke (http 502)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HIVEMIND_ADDR", g.srv.URL)
			_, err := run(t, tt.args...)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing name", []string{"app", "status"}, "usage: hivemind app status NAME"},
		{"extra argument", []string{"app", "rm", "a", "b"}, "usage: hivemind app rm NAME"},
		{"bad replicas", []string{"app", "scale", "web", "-1"}, `replicas "-1": want a number >= 0`},
		{"replicas above int32", []string{"app", "scale", "web", "2147483648"},
			`replicas "2147483648": out of range, the maximum is 1000`},
		{"replicas above the maximum", []string{"app", "scale", "web", "1001"},
			`replicas "1001": out of range, the maximum is 1000`},
		{"replicas not a number", []string{"app", "scale", "web", "many"}, `replicas "many": want a number >= 0`},
		{"bad output", []string{"app", "ls", "-o", "yaml"}, `output "yaml": want table or json`},
		{"unknown flag after args", []string{"app", "status", "web", "--nope", "x"},
			"flag provided but not defined: --nope"},
		{"unknown flag", []string{"app", "ls", "--bogus"}, "flag provided but not defined: --bogus"},
		{"unknown short flag", []string{"app", "ls", "-x"}, "flag provided but not defined: -x"},
		{"unknown command", []string{"foo"}, `unknown command "foo"`},
		{"unknown subcommand", []string{"snapshot", "load", "x"}, `unknown command "snapshot load"`},
		{"restore without a file", []string{"snapshot", "restore"}, "usage: hivemind snapshot restore FILE"},
		{"no file", []string{"app", "deploy"}, "usage: hivemind app deploy FILE | -f FILE"},
		{"two files", []string{"app", "deploy", "a.yaml", "-f", "b.yaml"},
			"usage: hivemind app deploy FILE | -f FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// A command without arguments names itself alone when given one.
func TestUsageWithoutArguments(t *testing.T) {
	_, err := run(t, "raft", "peers", "extra")
	if err == nil || err.Error() != "usage: hivemind raft peers" {
		t.Fatalf("error %q, want exactly %q", err, "usage: hivemind raft peers")
	}
}

func TestManagerUnreachable(t *testing.T) {
	g := newFakeGateway(t)
	url := g.srv.URL
	g.srv.Close()
	_, err := run(t, "node", "ls", "--addr", url)
	if err == nil || !strings.Contains(err.Error(), "manager at "+strings.TrimPrefix(url, "http://")) {
		t.Fatalf("error %v, want one naming the manager", err)
	}
}

func TestDeploy(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("POST /v1/apps", &pb.DeployAppResponse{App: "web", Version: 3, DeploymentId: "d3", Changed: true})
	dir := t.TempDir()
	good := filepath.Join(dir, "web.yaml")
	os.WriteFile(good, []byte("name: web\nimage: reg/web:v3\nreplicas: 0\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: web\nimage: x\nupdate:\n  min_healthy_time: 2x\n"), 0o644)

	out, err := run(t, "app", "deploy", "--addr", g.srv.URL, "-f", good)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if out != "app \"web\": version 3, deployment d3\n" {
		t.Fatalf("deploy output %q", out)
	}
	reqs := g.requests()
	if len(reqs) != 1 || reqs[0].method != "POST" || reqs[0].path != "/v1/apps" {
		t.Fatalf("requests %v, want one POST /v1/apps", reqs)
	}
	var sent pb.AppSpec
	if err := protojson.Unmarshal(reqs[0].body, &sent); err != nil {
		t.Fatalf("request body: %v", err)
	}
	if sent.Name != "web" || sent.Replicas != 0 || sent.Update.GetBatchSize() != 1 {
		t.Fatalf("sent spec %v, want web with 0 replicas and defaults", &sent)
	}

	out, err = run(t, "app", "deploy", "--addr", g.srv.URL, good, "-o", "json")
	if err != nil {
		t.Fatalf("deploy FILE -o json: %v", err)
	}
	jsonEq(t, out, `{"app":"web","version":3,"deployment_id":"d3","changed":true}`)

	_, err = run(t, "app", "deploy", "--addr", g.srv.URL, "-f", bad)
	want := bad + `: line 4: update.min_healthy_time: invalid duration "2x"`
	if err == nil || err.Error() != want {
		t.Fatalf("deploy of a bad spec: %v, want %q", err, want)
	}
	if n := len(g.requests()); n != 2 {
		t.Fatalf("%d requests, want none for the bad spec", n-2)
	}
}

func TestNodeDrainAndActivate(t *testing.T) {
	g := newFakeGateway(t)
	g.ok("POST /v1/nodes/w1/drain", &pb.DrainNodeResponse{})
	g.ok("POST /v1/nodes/w1/activate", &pb.ActivateNodeResponse{})
	g.err("POST /v1/nodes/w9/drain", http.StatusNotFound, 5, `node "w9": not found`)
	g.err("POST /v1/nodes/m1/drain", http.StatusBadRequest, 3,
		`node "m1": is a manager; only workers run tasks`)

	tests := []struct {
		name    string
		args    []string
		out     string
		err     string
		reqPath string
	}{
		{name: "drain", args: []string{"node", "drain", "w1"},
			out: "node \"w1\" draining\n", reqPath: "/v1/nodes/w1/drain"},
		{name: "activate", args: []string{"node", "activate", "w1"},
			out: "node \"w1\" ready\n", reqPath: "/v1/nodes/w1/activate"},
		{name: "drain json", args: []string{"node", "drain", "w1", "-o", "json"},
			out: `{"node":"w1","status":"draining"}`, reqPath: "/v1/nodes/w1/drain"},
		{name: "unknown node", args: []string{"node", "drain", "w9"},
			err: `node "w9": not found`, reqPath: "/v1/nodes/w9/drain"},
		{name: "manager", args: []string{"node", "drain", "m1"},
			err:     `node "m1": is a manager; only workers run tasks`,
			reqPath: "/v1/nodes/m1/drain"},
		{name: "no name", args: []string{"node", "activate"},
			err: "usage: hivemind node activate NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HIVEMIND_ADDR", g.srv.URL)
			before := len(g.requests())
			out, err := run(t, tt.args...)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
			case err != nil:
				t.Fatalf("run: %v", err)
			case strings.HasPrefix(tt.out, "{"):
				jsonEq(t, out, tt.out)
			case out != tt.out:
				t.Fatalf("output %q, want %q", out, tt.out)
			}

			reqs := g.requests()[before:]
			if tt.reqPath == "" {
				if len(reqs) != 0 {
					t.Fatalf("requests %v, want none", reqs)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].method != "POST" || reqs[0].path != tt.reqPath {
				t.Fatalf("requests %v, want one POST %s", reqs, tt.reqPath)
			}
			if !strings.Contains(string(reqs[0].body), `"name"`) {
				t.Errorf("request body %s, want the node's name", reqs[0].body)
			}
		})
	}
}

func TestSnapshotSave(t *testing.T) {
	g := newFakeGateway(t)
	g.handle("GET /v1/snapshot", func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/vnd.sqlite3")
		io.WriteString(w, "SQLite format 3\x00rest")
	})
	path := filepath.Join(t.TempDir(), "snap.db")
	out, err := run(t, "snapshot", "save", "--addr", g.srv.URL, path)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "SQLite format 3\x00rest" {
		t.Fatalf("snapshot file %q (%v)", b, err)
	}
	if !strings.Contains(out, path) {
		t.Fatalf("output %q does not name the file", out)
	}

	// A failed download leaves the old file and no temporary one.
	g.handle("GET /v1/snapshot", func(w http.ResponseWriter) {
		http.Error(w, "snapshot: disk full", http.StatusInternalServerError)
	})
	_, err = run(t, "snapshot", "save", "--addr", g.srv.URL, path)
	if err == nil || err.Error() != "snapshot: disk full (http 500)" {
		t.Fatalf("failed snapshot: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files after a failed save, want 1", len(entries))
	}
}

// TestExitCode builds the binary and checks what a failure looks like.
func TestExitCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the hivemind binary")
	}
	g := newFakeGateway(t)
	g.err("GET /v1/apps/nope", http.StatusNotFound, 5, `app "nope" not found`)
	g.ok("GET /v1/cluster/join-token/manager", &pb.JoinTokenResponse{Token: "HMM-x"})

	bin := filepath.Join(t.TempDir(), "hivemind")
	build := exec.Command("go", "build", "-o", bin, "github.com/hivemind-orch/hivemind/cmd/hivemind")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderrLine string
	}{
		{"not found", []string{"app", "status", "nope"}, 1, "", `error: app "nope" not found`},
		{"token", []string{"cluster", "join-token", "manager"}, 0, "HMM-x\n", ""},
		{"unknown command", []string{"foo"}, 1, "", `error: unknown command "foo"`},
		{"unknown flag", []string{"app", "ls", "--bogus"}, 1, "",
			"error: flag provided but not defined: --bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append(os.Environ(), "HIVEMIND_ADDR="+g.srv.URL)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("run: %v", err)
			}
			if code != tt.code || stdout.String() != tt.stdout {
				t.Fatalf("exit %d stdout %q, want %d %q (stderr %q)",
					code, stdout.String(), tt.code, tt.stdout, stderr.String())
			}
			want := ""
			if tt.stderrLine != "" {
				want = tt.stderrLine + "\n"
			}
			if stderr.String() != want {
				t.Fatalf("stderr %q, want %q", stderr.String(), want)
			}
		})
	}
}
