package cli

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func raftCommand(co *clientOpts) *cli.Command {
	return &cli.Command{
		Name:  "raft",
		Usage: "list and change the managers' Raft membership",
		Subcommands: []*cli.Command{
			{
				Name:   "peers",
				Usage:  "list the Raft servers with their state and progress",
				Flags:  co.flags(),
				Action: action(co.raftPeers),
			},
			{
				Name:      "remove-peer",
				Usage:     "remove a manager that is gone for good from the Raft configuration",
				ArgsUsage: "NAME",
				Flags:     co.flags(),
				Action:    action(co.raftRemovePeer),
			},
			{
				Name:      "transfer-leadership",
				Usage:     "hand leadership to NAME, or to the most caught-up voter",
				ArgsUsage: "[NAME]",
				Flags:     co.flags(),
				Action:    action(co.raftTransferLeadership),
			},
		},
	}
}

// peerJSON is one entry of `raft peers -o json`. Fields may be added.
// LastContactNS is nanoseconds since the peer last heard from the
// leader: 0 on the leader, -1 if never. The engine fields are the
// peer's rollout engine: whether it runs now and its passes and
// proposals since the process started.
type peerJSON struct {
	Name            string `json:"name"`
	Address         string `json:"address"`
	State           string `json:"state"`
	Voter           bool   `json:"voter"`
	Leader          bool   `json:"leader"`
	Term            uint64 `json:"term"`
	LastContactNS   int64  `json:"last_contact_ns"`
	AppliedIndex    uint64 `json:"applied_index"`
	LastIndex       uint64 `json:"last_index"`
	EngineEnabled   bool   `json:"engine_enabled"`
	EngineSteps     uint64 `json:"engine_steps"`
	EngineProposals uint64 `json:"engine_proposals"`
}

func toPeers(r *pb.ClusterStatusResponse) []peerJSON {
	out := []peerJSON{}
	for _, m := range r.GetManagers() {
		out = append(out, peerJSON{
			Name: m.GetName(), Address: m.GetAddress(), State: m.GetState(),
			Voter: m.GetVoter(), Leader: m.GetName() == r.GetLeader(),
			Term: m.GetTerm(), LastContactNS: m.GetLastContact(),
			AppliedIndex: m.GetAppliedIndex(), LastIndex: m.GetLastIndex(),
			EngineEnabled: m.GetEngineEnabled(), EngineSteps: m.GetEngineSteps(),
			EngineProposals: m.GetEngineProposals(),
		})
	}
	return out
}

func printPeers(w io.Writer, peers []peerJSON) error {
	rows := make([][]string, 0, len(peers))
	for _, p := range peers {
		row := []string{p.Name, p.Address, p.State, strconv.FormatBool(p.Voter),
			"-", "-", "-", "-", "-", "-"}
		if p.State != "unreachable" {
			row[4] = lastContact(p)
			row[5] = fmt.Sprint(p.AppliedIndex)
			row[6] = fmt.Sprint(p.LastIndex)
			row[7] = engineState(p.EngineEnabled)
			row[8] = fmt.Sprint(p.EngineSteps)
			row[9] = fmt.Sprint(p.EngineProposals)
		}
		rows = append(rows, row)
	}
	header := []string{"NAME", "ADDRESS", "STATE", "VOTER", "LAST CONTACT",
		"APPLIED", "LAST INDEX", "ENGINE", "STEPS", "PROPOSALS"}
	return table(w, header, rows)
}

// engineState shows whether a manager's rollout engine runs.
func engineState(enabled bool) string {
	if enabled {
		return "on"
	}
	return "off"
}

// lastContact shows how long ago a peer heard from the leader.
func lastContact(p peerJSON) string {
	switch {
	case p.Leader || p.State == "leader":
		return "-"
	case p.LastContactNS < 0:
		return "never"
	}
	return time.Duration(p.LastContactNS).Round(time.Millisecond).String()
}

func (co *clientOpts) raftPeers(c *cli.Context) error {
	if _, err := args(c, 0, ""); err != nil {
		return err
	}
	return show(co, c, "/v1/cluster/status", &pb.ClusterStatusResponse{},
		toPeers, printPeers)
}

func (co *clientOpts) raftRemovePeer(c *cli.Context) error {
	pos, err := args(c, 1, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	cl, err := co.client()
	if err != nil {
		return err
	}
	path := "/v1/raft/peers/" + pathEscape(name)
	if err := cl.call(c.Context, "DELETE", path, nil, nil); err != nil {
		return err
	}
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, map[string]string{"removed": name})
	}
	_, err = fmt.Fprintf(c.App.Writer, "raft peer %q removed\n", name)
	return err
}

func (co *clientOpts) raftTransferLeadership(c *cli.Context) error {
	pos, err := argsBetween(c, 0, 1, "[NAME]")
	if err != nil {
		return err
	}
	req := &pb.TransferLeadershipRequest{}
	if len(pos) == 1 {
		req.Name = pos[0]
	}
	cl, err := co.client()
	if err != nil {
		return err
	}
	var resp pb.TransferLeadershipResponse
	path := "/v1/raft/transfer-leadership"
	if err := cl.call(c.Context, "POST", path, req, &resp); err != nil {
		return err
	}
	leader := resp.GetLeader()
	if co.output == outputJSON {
		return writeJSON(c.App.Writer, map[string]string{"leader": leader})
	}
	if leader == "" {
		_, err = fmt.Fprintln(c.App.Writer,
			"leadership transferred; the new leader is not known yet (see `hivemind raft peers`)")
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "leadership transferred to %q\n", leader)
	return err
}
