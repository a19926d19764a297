package fsm

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	cases := []struct {
		typ CommandType
		msg proto.Message
	}{
		{UpsertNodeType, &pb.UpsertNodeCmd{Node: &pb.Node{Name: "w1"}}},
		{NodeStatusType, &pb.NodeStatusCmd{Name: "w1", Status: pb.NodeDown, At: 5}},
		{DeployAppType, deploy(1, "d1").msg},
		{RemoveAppType, &pb.RemoveAppCmd{Name: "web", At: 7}},
		{ScaleAppType, &pb.ScaleAppCmd{Name: "web", Replicas: 3}},
		{PlanType, &pb.PlanCmd{Create: []*pb.Task{task("t1", "web", "w1", 1)},
			Stop: []string{"t0"}, App: "web", AppVersion: 1}},
		{TaskReportsType, reports("w1", 9, &pb.TaskReport{TaskId: "t1"}).msg},
		{DeleteTasksType, &pb.DeleteTasksCmd{Ids: []string{"t1"}}},
		{SetMetaType, &pb.SetMetaCmd{Meta: &pb.ClusterMeta{ClusterId: "c"}}},
	}
	for _, tc := range cases {
		t.Run(tc.typ.String(), func(t *testing.T) {
			b, err := Encode(tc.typ, tc.msg)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if CommandType(b[0]) != tc.typ {
				t.Errorf("type byte = %d, want %d", b[0], tc.typ)
			}
			typ, msg, err := Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if typ != tc.typ || !proto.Equal(msg, tc.msg) {
				t.Errorf("decoded %s %v, want %s %v", typ, msg, tc.typ, tc.msg)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := []struct {
		name    string
		typ     CommandType
		msg     proto.Message
		wantErr error
	}{
		{"unknown type", 42, &pb.PlanCmd{}, ErrUnknownCommand},
		{"wrong payload", PlanType, &pb.ScaleAppCmd{}, ErrInvalid},
		{"nil payload", PlanType, nil, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encode(tc.typ, tc.msg); !errors.Is(err, tc.wantErr) {
				t.Errorf("encode: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeGarbage(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", []byte{}, ErrInvalid},
		{"unknown type", []byte{99}, ErrUnknownCommand},
		{"truncated field", []byte{byte(UpsertNodeType), 0x0a, 0x10, 0x01},
			ErrInvalid},
		{"bad wire type", []byte{byte(SetMetaType), 0x0f}, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, msg, err := Decode(tc.data)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("decode: %v, want %v", err, tc.wantErr)
			}
			if msg != nil {
				t.Errorf("decode returned %v with an error", msg)
			}
		})
	}
}
