package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Output formats of the client commands.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// DefaultAddr is the manager HTTP address client commands talk to.
const DefaultAddr = "http://127.0.0.1:7070"

// App returns the hivemind command line. Run returns an action's error
// instead of exiting; the caller prints it and sets the exit code. Each
// call builds a fresh App.
func App() *cli.App {
	co := &clientOpts{}
	return &cli.App{
		Name:  "hivemind",
		Usage: "run containers on a small fleet",
		Commands: []*cli.Command{
			managerCommand(),
			workerCommand(),
			clusterCommand(co),
			nodeCommand(co),
			appCommand(co),
			snapshotCommand(co),
		},
		// Errors go back to the caller of Run, never to os.Exit here.
		ExitErrHandler:       func(*cli.Context, error) {},
		HideVersion:          true,
		EnableBashCompletion: false,
	}
}

// clientOpts holds the flags every client command has. The flags write
// into it (Destination), so a flag given after the positional arguments
// can be set by name or alias (see args).
type clientOpts struct {
	addr   string
	output string
}

// clientFlags returns --addr and -o/--output bound to co.
func (co *clientOpts) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:        "addr",
			Usage:       "HTTP address of a manager",
			EnvVars:     []string{"HIVEMIND_ADDR"},
			Value:       DefaultAddr,
			Destination: &co.addr,
		},
		&cli.StringFlag{
			Name:        "output",
			Aliases:     []string{"o"},
			Usage:       "output format: table or json",
			Value:       outputTable,
			Destination: &co.output,
		},
	}
}

// client checks the output flag and returns an API client.
func (co *clientOpts) client() (*client, error) {
	if co.output != outputTable && co.output != outputJSON {
		return nil, fmt.Errorf("output %q: want table or json", co.output)
	}
	return newClient(co.addr)
}

var (
	// errUsage is wrapped by errors about the positional arguments.
	errUsage = errors.New("usage")

	// errHelpShown ends an action that printed its help instead.
	errHelpShown = errors.New("help shown")
)

// action wraps an action so that printing help is not a failure.
func action(fn cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := fn(c); !errors.Is(err, errHelpShown) {
			return err
		}
		return nil
	}
}

// args returns the positional arguments of c, checking there are exactly
// want of them (usage names them). The flag package stops at the first
// positional argument, so flags given after it (`app status web -o json`)
// arrive here; they are applied by name, which works for every alias
// because client flags write to a shared Destination.
func args(c *cli.Context, want int, usage string) ([]string, error) {
	var pos []string
	in := c.Args().Slice()
	for i := 0; i < len(in); i++ {
		a := in[i]
		if a == "--" {
			pos = append(pos, in[i+1:]...)
			break
		}
		if !isFlag(a) {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "h" || name == "help" {
			if err := cli.ShowCommandHelp(c, c.Command.Name); err != nil {
				return nil, err
			}
			return nil, errHelpShown
		}
		if !hasVal {
			if i+1 >= len(in) {
				return nil, fmt.Errorf("%w: flag %s needs a value", errUsage, a)
			}
			i++
			val = in[i]
		}
		if err := c.Set(name, val); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errUsage, a, err)
		}
	}
	if len(pos) != want {
		return nil, fmt.Errorf("%w: %s %s", errUsage, c.Command.HelpName, usage)
	}
	return pos, nil
}

// isFlag reports whether a looks like a flag rather than a value; a
// negative number is a value.
func isFlag(a string) bool {
	if len(a) < 2 || a[0] != '-' {
		return false
	}
	_, err := strconv.ParseFloat(a, 64)
	return err != nil
}
