package agent

import (
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/agent/runtime"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Labels put on every task container. LabelNode names the worker that
// started it: workers may share a containerd namespace, and each touches
// only the containers carrying its own name.
const (
	LabelTaskID  = "hivemind.task-id"
	LabelApp     = "hivemind.app"
	LabelVersion = "hivemind.version"
	LabelNode    = "hivemind.node"
)

// containerSpec is the runtime spec of task t run by the worker called
// node. The container ID is the task ID; logs go to logDir/<id>.log.
//
// TODO: the log of a task that is gone stays in logDir for good; a
// retention (by age or count) when the task is torn down would bound it.
func containerSpec(t *pb.Task, node, bindAddr, logDir string) runtime.Spec {
	version := strconv.FormatUint(t.GetVersion(), 10)
	return runtime.Spec{
		ID:    t.GetId(),
		Image: t.GetSpec().GetImage(),
		Args:  append([]string(nil), t.GetSpec().GetCommand()...),
		Env:   taskEnv(t, bindAddr),
		Labels: map[string]string{
			LabelTaskID:  t.GetId(),
			LabelApp:     t.GetApp(),
			LabelVersion: version,
			LabelNode:    node,
		},
		LogPath: filepath.Join(logDir, t.GetId()+".log"),
	}
}

// taskEnv is the spec's environment, sorted by name, followed by the
// HIVEMIND_ variables. Ours come last so that they win over the spec's.
func taskEnv(t *pb.Task, bindAddr string) []string {
	ip := t.GetAddress()
	if ip == "" {
		ip = bindAddr
	}

	var env []string
	user := t.GetSpec().GetEnv()
	for _, k := range sortedKeys(user) {
		env = append(env, k+"="+user[k])
	}

	env = append(env, "HIVEMIND_IP="+ip)
	ports := t.GetPorts()
	for _, name := range sortedKeys(ports) {
		p := strconv.Itoa(int(ports[name]))
		key := envName(name)
		env = append(env,
			"HIVEMIND_PORT_"+key+"="+p,
			"HIVEMIND_ADDR_"+key+"="+net.JoinHostPort(ip, p))
	}
	return append(env,
		"HIVEMIND_APP="+t.GetApp(),
		"HIVEMIND_TASK_ID="+t.GetId(),
		"HIVEMIND_VERSION="+strconv.FormatUint(t.GetVersion(), 10))
}

// envName turns a port name into the suffix of its variables: "admin-ui"
// becomes "ADMIN_UI".
func envName(port string) string {
	return strings.ToUpper(strings.ReplaceAll(port, "-", "_"))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ownedContainers returns the containers of cs labelled as started by the
// worker called node; the others belong to another worker sharing the
// namespace and are never touched. Containers with no node label (started
// by an agent that did not set one) are left alone too, with one warning
// naming them, since no worker can tell whose they are.
// TODO: an unlabelled container whose task is assigned here makes its
// start fail with runtime.ErrExists; adopt it when the first assignment
// list names it, which needs that list before this filter runs.
func ownedContainers(cs []runtime.Container, node string,
	log hclog.Logger) []runtime.Container {
	var owned []runtime.Container
	var unlabelled []string
	for _, c := range cs {
		switch owner := c.Labels[LabelNode]; owner {
		case node:
			owned = append(owned, c)
		case "":
			unlabelled = append(unlabelled, c.ID)
		default:
			log.Debug("leaving the container of another worker",
				"task_id", c.ID, "owner", owner)
		}
	}
	if len(unlabelled) > 0 {
		log.Warn("leaving alone containers without the "+LabelNode+
			" label; remove them by hand if no worker runs them",
			"count", len(unlabelled), "ids", unlabelled)
	}
	return owned
}
