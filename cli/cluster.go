package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func clusterCommand(co *clientOpts) *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "show the managers and hand out join tokens",
		Subcommands: []*cli.Command{
			{
				Name:   "status",
				Usage:  "show the leader and every manager's Raft state",
				Flags:  co.flags(),
				Action: action(co.clusterStatus),
			},
			{
				Name:      "join-token",
				Usage:     "print the token a worker or manager joins with",
				ArgsUsage: "worker|manager",
				Flags:     co.flags(),
				Action:    action(co.joinToken),
			},
		},
	}
}

func nodeCommand(co *clientOpts) *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "list, drain and activate the cluster's nodes",
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list managers and workers with their status",
				Flags:   co.flags(),
				Action:  action(co.nodeList),
			},
			{
				Name:      "drain",
				Usage:     "move a worker's tasks away and place nothing new on it",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action: action(func(c *cli.Context) error {
					return co.nodeSetStatus(c, "drain", pb.NodeDraining,
						func(n string) proto.Message { return &pb.DrainNodeRequest{Name: n} })
				}),
			},
			{
				Name:      "activate",
				Usage:     "make a drained worker eligible for new tasks again",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action: action(func(c *cli.Context) error {
					return co.nodeSetStatus(c, "activate", pb.NodeReady,
						func(n string) proto.Message { return &pb.ActivateNodeRequest{Name: n} })
				}),
			},
		},
	}
}

func (co *clientOpts) clusterStatus(c *cli.Context) error {
	if _, err := args(c, 0, ""); err != nil {
		return err
	}
	return show(co, c, "/v1/cluster/status", &pb.ClusterStatusResponse{},
		toClusterStatus, printClusterStatus)
}

func (co *clientOpts) joinToken(c *cli.Context) error {
	pos, err := args(c, 1, "worker|manager")
	if err != nil {
		return err
	}
	role := pos[0]
	if role != pb.RoleWorker && role != pb.RoleManager {
		return fmt.Errorf("role %q: want worker or manager", role)
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.JoinTokenResponse
	path := "/v1/cluster/join-token/" + pathEscape(role)
	if err := cl.call(c.Context, "GET", path, nil, &resp); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, map[string]string{"token": resp.GetToken()})
	}
	// The token alone, so that scripts can capture it.
	_, err = fmt.Fprintln(c.App.Writer, resp.GetToken())
	return err
}

func (co *clientOpts) nodeList(c *cli.Context) error {
	if _, err := args(c, 0, ""); err != nil {
		return err
	}
	return show(co, c, "/v1/nodes", &pb.ListNodesResponse{}, toNodes, printNodes)
}

// nodeSetStatus posts req(NAME) to /v1/nodes/NAME/verb and prints the
// node's new status. The manager answers once the change is committed;
// moving tasks away is the leader's work after that.
func (co *clientOpts) nodeSetStatus(c *cli.Context, verb, status string,
	req func(name string) proto.Message) error {

	pos, err := args(c, 1, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	cl, err := co.client()
	if err != nil {
		return err
	}
	path := "/v1/nodes/" + pathEscape(name) + "/" + verb
	if err := cl.call(c.Context, "POST", path, req(name), nil); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, map[string]string{
			"node": name, "status": status})
	}
	_, err = fmt.Fprintf(c.App.Writer, "node %q %s\n", name, status)
	return err
}
