// Package pb holds Hivemind's protobuf messages, the generated gRPC and
// REST gateway code, and the string values the objects use. It has no logic;
// every other package may import it.
//
// Regenerate the generated files with `make proto`.
package pb

// Node roles.
const (
	RoleWorker  = "worker"
	RoleManager = "manager"
)

// Node statuses.
const (
	NodeReady    = "ready"
	NodeDown     = "down"
	NodeDraining = "draining"
)

// Desired states of a task, set by the leader.
const (
	DesiredRun  = "run"
	DesiredStop = "stop"
)

// Observed states of a task, reported by its worker.
const (
	TaskPending  = "pending"
	TaskStarting = "starting"
	TaskRunning  = "running"
	TaskDraining = "draining"
	TaskStopping = "stopping"
	TaskStopped  = "stopped"
	TaskFailed   = "failed"

	// TaskLost is never stored: AppStatus shows it for a task whose node
	// is down, since its worker cannot say what became of it.
	TaskLost = "lost"
)

// Deployment statuses.
const (
	DeploymentRunning    = "running"
	DeploymentSuccessful = "successful"
	DeploymentFailed     = "failed"
	DeploymentRolledBack = "rolled_back"
)

// Port protocols.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
)
