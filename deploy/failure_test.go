package deploy

import (
	"testing"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

func TestFailureOf(t *testing.T) {
	tests := []struct {
		name string
		task *pb.Task
		want string
	}{
		{
			name: "pull failed",
			task: &pb.Task{Id: "t1", Node: "w2", State: pb.TaskFailed,
				Message: "pull web:nope: not found"},
			want: "task t1 on w2 failed: pull web:nope: not found",
		},
		{
			name: "exited with a code",
			task: &pb.Task{Id: "t1", Node: "w2", State: pb.TaskFailed,
				ExitCode: 1, Message: "exited with code 1"},
			want: "task t1 on w2 failed (exit code 1): exited with code 1",
		},
		{
			name: "exited 0 after being healthy",
			task: &pb.Task{Id: "t1", Node: "w2", State: pb.TaskFailed,
				EverHealthy: true},
			want: "task t1 on w2 failed (exit code 0)",
		},
		{
			name: "stopped",
			task: &pb.Task{Id: "t1", Node: "w2", State: pb.TaskStopped},
			want: "task t1 on w2 stopped (exit code 0)",
		},
		{
			name: "unhealthy",
			task: &pb.Task{Id: "t1", Node: "w2", State: pb.TaskRunning},
			want: "task t1 on w2 turned unhealthy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureOf(tt.task); got != tt.want {
				t.Errorf("failureOf = %q, want %q", got, tt.want)
			}
		})
	}
}
