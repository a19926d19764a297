package cli

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/hivemind-orch/hivemind/agent"
)

func workerCommand() *cli.Command {
	d := agent.DefaultConfig()
	return &cli.Command{
		Name:  "worker",
		Usage: "run a worker: register with the managers and run its tasks",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: d.Name,
				Usage: "node name, unique in the cluster"},
			&cli.StringFlag{Name: "data-dir", Value: d.DataDir,
				Usage: "directory for the worker's files"},
			&cli.StringFlag{Name: "bind", Value: d.BindAddr,
				Usage: "IP to listen on and advertise"},
			&cli.IntFlag{Name: "gossip-port", Value: d.GossipPort,
				Usage: "gossip port (TCP and UDP)"},
			&cli.IntFlag{Name: "dns-port", Value: d.DNSPort,
				Usage: "port of the worker's DNS server"},
			&cli.StringSliceFlag{Name: "join", Required: true,
				Usage: "manager address, ip or ip:port of its gRPC port " +
					"(default port 7071); repeat or separate with commas"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"HIVEMIND_TOKEN"},
				Usage: "worker join token, from hivemind cluster join-token worker"},
			&cli.StringFlag{Name: "containerd-socket", Value: d.ContainerdSocket,
				Usage: "containerd's socket"},
			&cli.StringFlag{Name: "containerd-namespace", Value: d.ContainerdNamespace,
				Usage: "containerd namespace of the worker's containers"},
			&cli.StringSliceFlag{Name: "insecure-registry",
				Usage: "registry (host:port) to pull from over plain HTTP; repeatable"},
			logLevelFlag(),
		},
		Action: action(runWorker),
	}
}

func runWorker(c *cli.Context) error {
	if _, err := args(c, 0, "[flags]"); err != nil {
		return err
	}
	log, err := newLogger(c, "worker")
	if err != nil {
		return err
	}

	cfg := agent.DefaultConfig()
	cfg.Name = c.String("name")
	if err := checkNodeName("worker", cfg.Name); err != nil {
		return err
	}
	cfg.DataDir = c.String("data-dir")
	cfg.BindAddr = c.String("bind")
	cfg.GossipPort = c.Int("gossip-port")
	cfg.DNSPort = c.Int("dns-port")
	cfg.Join = splitList(c.StringSlice("join"))
	cfg.Token = c.String("token")
	cfg.ContainerdSocket = c.String("containerd-socket")
	cfg.ContainerdNamespace = c.String("containerd-namespace")
	cfg.InsecureRegistries = splitList(c.StringSlice("insecure-registry"))
	cfg.Logger = log

	a, err := agent.New(cfg)
	if err != nil {
		return err
	}

	// The agent stops on SIGINT or SIGTERM and leaves its containers
	// running for the next start.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
