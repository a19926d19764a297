package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"

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
		Usage: "list the cluster's nodes",
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list managers and workers with their status",
				Flags:   co.flags(),
				Action:  action(co.nodeList),
			},
		},
	}
}

func (co *clientOpts) clusterStatus(c *cli.Context) error {
	if _, err := args(c, 0, ""); err != nil {
		return err
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.ClusterStatusResponse
	if err := cl.call(c.Context, "GET", "/v1/cluster/status", nil, &resp); err != nil {
		return err
	}
	s := toClusterStatus(&resp)
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, s)
	}
	return printClusterStatus(c.App.Writer, s)
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
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.ListNodesResponse
	if err := cl.call(c.Context, "GET", "/v1/nodes", nil, &resp); err != nil {
		return err
	}
	nodes := toNodes(&resp)
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, nodes)
	}
	return printNodes(c.App.Writer, nodes)
}
