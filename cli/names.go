package cli

import (
	"fmt"
	"regexp"
)

// nodeNameRE is what a node's --name may be: it names the node in Raft,
// gossip, URLs (`raft remove-peer NAME`) and logs, so it is kept to the
// characters of a host name, plus '_'.
var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkNodeName refuses a --name that nodeNameRE does not match; role is
// "manager" or "worker".
func checkNodeName(role, name string) error {
	if name == "" {
		return fmt.Errorf("%s: --name is required (no host name to default to)", role)
	}
	if !nodeNameRE.MatchString(name) {
		return fmt.Errorf("%s: --name %q: want 1 to 63 letters, digits, '.', '_' or '-', "+
			"starting with a letter or digit", role, name)
	}
	return nil
}
