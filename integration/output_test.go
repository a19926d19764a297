package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hivemind-orch/hivemind/internal/cluster"
)

// Machine-readable output: the field names issue 2 promises to scripts are
// all there, decoded loosely so that a renamed field is caught (a struct
// would just leave it zero).
func TestJSONFieldNames(t *testing.T) {
	t.Parallel()
	c := sharedCluster(t)
	onFailure(t, c)

	app := cluster.WebApp{Name: "shapes", Image: c.Image("v1"), Replicas: 1}
	deployApp(t, c, app)
	waitSettled(t, c, app.Name, 1, 60*time.Second)
	app.Image = c.Image("v2")
	deploy(t, c, app.YAML())
	waitSettled(t, c, app.Name, 2, 60*time.Second)

	raw := func(args ...string) any {
		t.Helper()
		out, err := c.CLI(append(args, "-o", "json")...)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("hivemind %s -o json: %v: %q", strings.Join(args, " "), err, out)
		}
		return v
	}
	for _, tc := range []struct {
		cmd  []string
		path string // where the keys are: "" the object, "[]" each element, "field[]" each element of field
		keys []string
	}{
		{[]string{"cluster", "status"}, "", []string{"leader", "managers"}},
		{[]string{"cluster", "status"}, "managers[]", []string{"name", "address", "state", "voter",
			"engine_enabled", "engine_steps", "engine_proposals"}},
		{[]string{"raft", "peers"}, "[]", []string{"name", "address", "state", "voter", "leader",
			"applied_index", "last_index", "engine_enabled", "engine_steps", "engine_proposals"}},
		{[]string{"node", "ls"}, "[]", []string{"name", "role", "address", "status"}},
		{[]string{"app", "ls"}, "[]", []string{"name", "version", "replicas", "running", "healthy", "image", "deployment_status"}},
		{[]string{"app", "status", "shapes"}, "", []string{"name", "version", "replicas", "tasks", "deployment"}},
		{[]string{"app", "status", "shapes"}, "tasks[]", []string{"id", "node", "version", "image", "state", "healthy", "addresses"}},
		{[]string{"app", "status", "shapes"}, "deployment", []string{"id", "status", "from_version", "to_version"}},
	} {
		name := strings.Join(tc.cmd, " ") + " " + tc.path
		t.Run(name, func(t *testing.T) {
			objs, err := at(raw(tc.cmd...), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatalf("no object at %q", tc.path)
			}
			for _, o := range objs {
				for _, k := range tc.keys {
					if _, ok := o[k]; !ok {
						t.Errorf("key %q missing in %v", k, o)
					}
				}
			}
		})
	}
}

// at returns the objects at path in v ("", "[]", "field", "field[]").
func at(v any, path string) ([]map[string]any, error) {
	field, each := strings.CutSuffix(path, "[]")
	if field != "" {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("not an object: %v", v)
		}
		v = obj[field]
	}
	if !each {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is not an object: %v", path, v)
		}
		return []map[string]any{obj}, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%q is not a list: %v", path, v)
	}
	var out []map[string]any
	for _, e := range list {
		obj, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q holds a non-object: %v", path, e)
		}
		out = append(out, obj)
	}
	return out, nil
}

// Every client command fails with a non-zero status and one line naming
// what went wrong.
func TestCLIErrors(t *testing.T) {
	t.Parallel()
	c := sharedCluster(t)
	onFailure(t, c)

	for _, tc := range []struct {
		name string
		args []string
		want string // the message must contain it
	}{
		{"status of a missing app", []string{"app", "status", "no-such-app"}, "no-such-app"},
		{"scale of a missing app", []string{"app", "scale", "no-such-app", "2"}, "no-such-app"},
		{"rm of a missing app", []string{"app", "rm", "no-such-app"}, "no-such-app"},
		{"rollback of a missing app", []string{"app", "rollback", "no-such-app"}, "no-such-app"},
		{"deploy of a missing file", []string{"app", "deploy", "-f", "/nonexistent/app.yaml"}, "/nonexistent/app.yaml"},
		{"no manager at --addr", []string{"node", "ls", "--addr", "http://127.0.0.1:1"}, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CLI(tc.args...)
			var ce *cluster.CLIError
			if !errors.As(err, &ce) {
				t.Fatalf("want a non-zero exit, got %v", err)
			}
			if strings.Contains(ce.Stderr, "\n") {
				t.Errorf("error is not one line: %q", ce.Stderr)
			}
			if !strings.Contains(ce.Stderr, tc.want) {
				t.Errorf("error %q does not name %q", ce.Stderr, tc.want)
			}
		})
	}
}

// Point 1: a follower forwards writes to the leader, so a client may talk
// to any manager.
func TestWritesThroughFollower(t *testing.T) {
	t.Parallel()
	c := sharedCluster(t)
	onFailure(t, c)

	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, m := range c.Managers() {
		if m.Name != leader && c.Running(m.Name) {
			follower = m.Name
		}
	}
	app := cluster.WebApp{Name: "via-follower", Image: c.Image("v1"), Replicas: 1}
	if _, err := c.DeployAt(follower, app.YAML()); err != nil {
		t.Fatalf("deploy through follower %s: %v", follower, err)
	}
	t.Cleanup(func() { removeApp(t, c, app.Name) })
	if _, err := c.CLIAt(follower, "app", "scale", app.Name, "2"); err != nil {
		t.Fatalf("scale through follower %s: %v", follower, err)
	}
	st := waitSettled(t, c, app.Name, 1, 60*time.Second)
	if st.Replicas != 2 {
		t.Errorf("replicas %d after scaling to 2 through %s", st.Replicas, follower)
	}
	if _, err := c.CLIAt(follower, "app", "rm", app.Name); err != nil {
		t.Fatalf("rm through follower %s: %v", follower, err)
	}
	wait(t, 20*time.Second, "app via-follower removed", func() error {
		if _, err := c.AppStatus(app.Name); err == nil {
			return fmt.Errorf("app %s still there", app.Name)
		}
		return nil
	})
}
