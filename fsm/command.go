package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Sentinel errors returned, wrapped, by Apply, Encode, Decode and Restore.
// Compare them with errors.Is.
var (
	// ErrAppNotFound means the command names an app that does not exist.
	ErrAppNotFound = errors.New("app not found")
	// ErrNodeNotFound means the command names a node that does not exist.
	ErrNodeNotFound = errors.New("node not found")
	// ErrVersionConflict means a DeployAppCmd expected another app version.
	ErrVersionConflict = errors.New("version conflict")
	// ErrUnknownCommand means an entry has a command type this FSM does not
	// know.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrInvalid means a command or a snapshot is malformed.
	ErrInvalid = errors.New("invalid")
)

// CommandType is the first byte of a Raft entry. It names the protobuf
// message that follows.
type CommandType uint8

// The command types. The payload of each is named in its comment. Values
// are written into the Raft log: never renumber them.
const (
	UpsertNodeType  CommandType = 1 // *pb.UpsertNodeCmd
	NodeStatusType  CommandType = 2 // *pb.NodeStatusCmd
	DeployAppType   CommandType = 3 // *pb.DeployAppCmd
	RemoveAppType   CommandType = 4 // *pb.RemoveAppCmd
	ScaleAppType    CommandType = 5 // *pb.ScaleAppCmd
	PlanType        CommandType = 6 // *pb.PlanCmd
	TaskReportsType CommandType = 7 // *pb.TaskReportsCmd
	DeleteTasksType CommandType = 8 // *pb.DeleteTasksCmd
	SetMetaType     CommandType = 9 // *pb.SetMetaCmd
)

// String returns the command type's name, for logs.
func (t CommandType) String() string {
	switch t {
	case UpsertNodeType:
		return "UpsertNode"
	case NodeStatusType:
		return "NodeStatus"
	case DeployAppType:
		return "DeployApp"
	case RemoveAppType:
		return "RemoveApp"
	case ScaleAppType:
		return "ScaleApp"
	case PlanType:
		return "Plan"
	case TaskReportsType:
		return "TaskReports"
	case DeleteTasksType:
		return "DeleteTasks"
	case SetMetaType:
		return "SetMeta"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// newPayload returns an empty message of the payload type of t, or nil if
// t is unknown.
func newPayload(t CommandType) proto.Message {
	switch t {
	case UpsertNodeType:
		return &pb.UpsertNodeCmd{}
	case NodeStatusType:
		return &pb.NodeStatusCmd{}
	case DeployAppType:
		return &pb.DeployAppCmd{}
	case RemoveAppType:
		return &pb.RemoveAppCmd{}
	case ScaleAppType:
		return &pb.ScaleAppCmd{}
	case PlanType:
		return &pb.PlanCmd{}
	case TaskReportsType:
		return &pb.TaskReportsCmd{}
	case DeleteTasksType:
		return &pb.DeleteTasksCmd{}
	case SetMetaType:
		return &pb.SetMetaCmd{}
	}
	return nil
}

// Encode returns a Raft entry: the type byte followed by msg in protobuf
// wire format. It returns ErrUnknownCommand for an unknown type and
// ErrInvalid when msg is not the payload type of t.
func Encode(t CommandType, msg proto.Message) ([]byte, error) {
	want := newPayload(t)
	if want == nil {
		return nil, fmt.Errorf("encode %s: %w", t, ErrUnknownCommand)
	}
	if msg == nil || msg.ProtoReflect().Descriptor() !=
		want.ProtoReflect().Descriptor() {
		return nil, fmt.Errorf("encode %s: payload %T: %w", t, msg, ErrInvalid)
	}

	// Deterministic so that equal commands make equal entries, which
	// keeps logs comparable byte for byte.
	opts := proto.MarshalOptions{Deterministic: true}
	b, err := opts.MarshalAppend([]byte{byte(t)}, msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return b, nil
}

// Decode splits a Raft entry made by Encode into its type and payload. It
// returns ErrInvalid for an empty entry or a payload that does not parse,
// and ErrUnknownCommand for an unknown type.
func Decode(b []byte) (CommandType, proto.Message, error) {
	if len(b) == 0 {
		return 0, nil, fmt.Errorf("decode: empty entry: %w", ErrInvalid)
	}
	t := CommandType(b[0])
	msg := newPayload(t)
	if msg == nil {
		return t, nil, fmt.Errorf("decode %s: %w", t, ErrUnknownCommand)
	}
	if err := proto.Unmarshal(b[1:], msg); err != nil {
		return t, nil, fmt.Errorf("decode %s: %w: %w", t, ErrInvalid, err)
	}
	return t, msg, nil
}
