package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

func logLevelFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "log-level",
		Usage:   "trace, debug, info, warn or error",
		EnvVars: []string{"HIVEMIND_LOG_LEVEL"},
		Value:   "info",
	}
}

// newLogger returns the process's root logger, writing to stderr.
func newLogger(c *cli.Context, name string) (hclog.Logger, error) {
	level := hclog.LevelFromString(c.String("log-level"))
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("log level %q: want trace, debug, info, warn or error",
			c.String("log-level"))
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  level,
		Output: os.Stderr,
	}), nil
}

// splitList flattens flag values that may hold comma-separated lists
// ("a,b" and "c" give a, b, c), dropping empty items.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
