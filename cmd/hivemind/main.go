// Command hivemind is the one binary of every Hivemind role: manager,
// worker and client. See `hivemind --help`.
package main

import (
	"fmt"
	"os"

	"github.com/hivemind-orch/hivemind/cli"
)

func main() {
	if err := cli.App().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
