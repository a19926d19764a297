package cli

import (
	"errors"
	"fmt"
	"slices"
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
	app := &cli.App{
		Name:  "hivemind",
		Usage: "run containers on a small fleet",
		Commands: []*cli.Command{
			managerCommand(),
			workerCommand(),
			clusterCommand(co),
			nodeCommand(co),
			appCommand(co),
			snapshotCommand(co),
			raftCommand(co),
		},
		Action:       groupAction,
		OnUsageError: usageError,
		// Errors go back to the caller of Run, never to os.Exit here.
		ExitErrHandler:       func(*cli.Context, error) {},
		HideVersion:          true,
		EnableBashCompletion: false,
	}
	setDefaults(app.Commands)
	return app
}

// setDefaults gives every command the usage error handler, and every
// command with subcommands the action that refuses an unknown one.
func setDefaults(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = usageError
		}
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
		setDefaults(c.Subcommands)
	}
}

// groupAction runs when no subcommand matched: it shows the help of a
// command given alone, and refuses an unknown subcommand (urfave/cli
// would otherwise look for a help topic of that name).
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		path := strings.TrimPrefix(c.Command.HelpName+" ", c.App.Name+" ")
		return fmt.Errorf("unknown command %q", path+c.Args().First())
	}
	if c.Command.HelpName == c.App.Name {
		return cli.ShowAppHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}

// usageError replaces urfave/cli's "Incorrect Usage" and help on stdout
// by the flag package's error alone, which the caller prints once. The
// flag package names a flag with one dash; ours are written with two.
func usageError(_ *cli.Context, err error, _ bool) error {
	const undefined = "flag provided but not defined: -"
	if name, ok := strings.CutPrefix(err.Error(), undefined); ok {
		return errors.New(undefinedFlag(name))
	}
	return err
}

// undefinedFlag is the error about a flag that the command lacks,
// written as it would be given: "-o" or "--bogus".
func undefinedFlag(name string) string {
	dashes := "--"
	if len(name) == 1 {
		dashes = "-"
	}
	return "flag provided but not defined: " + dashes + name
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
	return argsBetween(c, want, want, usage)
}

// argsBetween is args for a command that takes from least to most
// positional arguments.
func argsBetween(c *cli.Context, least, most int, usage string) ([]string, error) {
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
		if !hasFlag(c.Command, name) {
			return nil, errors.New(undefinedFlag(name))
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
	if len(pos) < least || len(pos) > most {
		return nil, fmt.Errorf("%w: %s", errUsage,
			strings.TrimSpace(c.Command.HelpName+" "+usage))
	}
	return pos, nil
}

// hasFlag reports whether cmd has a flag of that name or alias.
func hasFlag(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
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
