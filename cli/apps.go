package cli

import (
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/hivemind-orch/hivemind/rpc/pb"
	"github.com/hivemind-orch/hivemind/spec"
)

func appCommand(co *clientOpts) *cli.Command {
	var file string
	deployFlags := append(co.flags(), &cli.StringFlag{
		Name:        "file",
		Aliases:     []string{"f"},
		Usage:       "the app spec (YAML), or give FILE as the argument",
		Destination: &file,
	})
	return &cli.Command{
		Name:  "app",
		Usage: "deploy and manage apps",
		Subcommands: []*cli.Command{
			{
				Name:      "deploy",
				Usage:     "deploy a new version of an app from a spec file",
				ArgsUsage: "FILE | -f FILE",
				Flags:     deployFlags,
				Action: action(func(c *cli.Context) error {
					return co.appDeploy(c, &file)
				}),
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list apps with their task counts",
				Flags:   co.flags(),
				Action:  action(co.appList),
			},
			{
				Name:      "status",
				Usage:     "show an app's tasks and latest deployment",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action:    action(co.appStatus),
			},
			{
				Name:      "scale",
				Usage:     "change the number of replicas of an app",
				ArgsUsage: "NAME REPLICAS",
				Flags:     co.flags(),
				Action:    action(co.appScale),
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove"},
				Usage:     "remove an app and stop its tasks",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action:    action(co.appRemove),
			},
			{
				Name:      "rollback",
				Usage:     "deploy the app's last stable version again",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action:    action(co.appRollback),
			},
		},
	}
}

// appDeploy deploys the spec in the file named by the argument or by
// -f (which args may set, so it is read through a pointer).
func (co *clientOpts) appDeploy(c *cli.Context, flagFile *string) error {
	const usage = "FILE | -f FILE"
	pos, err := argsBetween(c, 0, 1, usage)
	if err != nil {
		return err
	}
	file := *flagFile
	switch {
	case len(pos) == 1 && file == "":
		file = pos[0]
	case len(pos) == 1 || file == "":
		return fmt.Errorf("%w: %s %s", errUsage, c.Command.HelpName, usage)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	// Catch a bad spec here, with its line, before any manager sees it.
	s, err := spec.Load(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.DeployAppResponse
	if err := cl.call(c.Context, "POST", "/v1/apps", s, &resp); err != nil {
		return err
	}

	out := deployJSON{
		App: resp.GetApp(), Version: resp.GetVersion(),
		DeploymentID: resp.GetDeploymentId(), Changed: resp.GetChanged(),
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, out)
	}
	w := c.App.Writer
	switch {
	case !out.Changed:
		fmt.Fprintf(w, "app %q: version %d unchanged, nothing to deploy\n", out.App, out.Version)
	case out.DeploymentID == "":
		fmt.Fprintf(w, "app %q: version %d stored\n", out.App, out.Version)
	default:
		fmt.Fprintf(w, "app %q: version %d, deployment %s\n", out.App, out.Version, out.DeploymentID)
	}
	return nil
}

func (co *clientOpts) appList(c *cli.Context) error {
	if _, err := args(c, 0, ""); err != nil {
		return err
	}
	return show(co, c, "/v1/apps", &pb.ListAppsResponse{}, toAppSummaries, printApps)
}

func (co *clientOpts) appStatus(c *cli.Context) error {
	pos, err := args(c, 1, "NAME")
	if err != nil {
		return err
	}
	return show(co, c, "/v1/apps/"+pathEscape(pos[0]), &pb.AppStatusResponse{},
		toAppStatus, printAppStatus)
}

// parseReplicas reads a replica count in 0..spec.MaxReplicas.
func parseReplicas(arg string) (int32, error) {
	n, err := strconv.ParseInt(arg, 10, 64)
	switch {
	case n > spec.MaxReplicas: // also an out-of-range error: n is then MaxInt64
		return 0, fmt.Errorf("replicas %q: out of range, the maximum is %d",
			arg, spec.MaxReplicas)
	case err != nil || n < 0:
		return 0, fmt.Errorf("replicas %q: want a number >= 0", arg)
	}
	return int32(n), nil
}

func (co *clientOpts) appScale(c *cli.Context) error {
	pos, err := args(c, 2, "NAME REPLICAS")
	if err != nil {
		return err
	}
	name := pos[0]
	n, err := parseReplicas(pos[1])
	if err != nil {
		return err
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	req := &pb.ScaleAppRequest{Name: name, Replicas: n}
	path := "/v1/apps/" + pathEscape(name) + "/scale"
	if err := cl.call(c.Context, "POST", path, req, &pb.ScaleAppResponse{}); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, struct {
			App      string `json:"app"`
			Replicas int32  `json:"replicas"`
		}{name, n})
	}
	_, err = fmt.Fprintf(c.App.Writer, "app %q: scaled to %d\n", name, n)
	return err
}

func (co *clientOpts) appRemove(c *cli.Context) error {
	pos, err := args(c, 1, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	cl, err := co.client()
	if err != nil {
		return err
	}
	path := "/v1/apps/" + pathEscape(name)
	if err := cl.call(c.Context, "DELETE", path, nil, &pb.RemoveAppResponse{}); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, map[string]string{"app": name})
	}
	_, err = fmt.Fprintf(c.App.Writer, "app %q: removed, its tasks are stopping\n", name)
	return err
}

func (co *clientOpts) appRollback(c *cli.Context) error {
	pos, err := args(c, 1, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.RollbackAppResponse
	path := "/v1/apps/" + pathEscape(name) + "/rollback"
	req := &pb.RollbackAppRequest{Name: name}
	if err := cl.call(c.Context, "POST", path, req, &resp); err != nil {
		return err
	}
	out := deployJSON{
		App: name, Version: resp.GetVersion(),
		DeploymentID: resp.GetDeploymentId(), Changed: true,
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, out)
	}
	_, err = fmt.Fprintf(c.App.Writer, "app %q: rolling back as version %d, deployment %s\n",
		name, out.Version, orDash(out.DeploymentID))
	return err
}
