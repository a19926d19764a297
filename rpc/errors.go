package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/deploy"
	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/spec"
)

var (
	// ErrNoLeader means no leader is known, or the leader's gRPC address
	// is not in the store yet. Callers should retry.
	ErrNoLeader = errors.New("no leader")

	// ErrNotFound is wrapped by lookups of objects that do not exist.
	ErrNotFound = errors.New("not found")
)

// toStatus turns an error into a gRPC status error. Errors that already
// carry a status (from a forwarded call) pass through unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), message(err))
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, fsm.ErrAppNotFound),
		errors.Is(err, fsm.ErrNodeNotFound),
		errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, spec.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, fsm.ErrVersionConflict):
		return codes.Aborted
	case errors.Is(err, deploy.ErrNoRollbackTarget):
		return codes.FailedPrecondition
	case noLeader(err):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Internal
}

// noLeader reports whether err means the request can succeed on a
// leader that is not here right now.
func noLeader(err error) bool {
	return errors.Is(err, ErrNoLeader) ||
		errors.Is(err, raft.ErrNotLeader) ||
		errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) ||
		errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, raft.ErrEnqueueTimeout)
}

// message is the status message: lower case, and starting with "no
// leader" whenever the code is Unavailable for want of a leader.
func message(err error) string {
	if noLeader(err) && !errors.Is(err, ErrNoLeader) {
		return fmt.Sprintf("%v: %v", ErrNoLeader, err)
	}
	return err.Error()
}
