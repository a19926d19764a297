// Package deploy is the leader-only rollout engine and the pure helpers
// that turn a user's spec into Raft commands.
//
// NewVersion and Rollback build DeployAppCmds for the rpc package: a new
// version of an app and, when tasks must change, the deployment that rolls
// it out. The Engine runs only on the Raft leader (switched on and off with
// SetEnabled) and, on every store change and every Interval, reads the
// store and proposes the next step: cluster meta, manager nodes, worker
// liveness, one PlanCmd per app (a rollout batch or a reconcile pass) and
// garbage collection of finished tasks.
//
// A task asked to stop leaves the ingress and DNS rotation (rotated_out)
// once every live worker has confirmed an endpoint set without it, or
// after Config.RotationBound; only then does its worker stop it. Tasks on
// a draining node are replaced start first and health gated, in batches,
// as in a rollout.
//
// The engine keeps nothing in memory that a successor would need: counters,
// deadlines and the rollback flag live in the Deployment, and every
// decision is derived again from the store on each Step. A new leader's
// first Step therefore carries on exactly where the old one stopped, and
// a lost proposal is simply decided again.
//
// The package never applies commands itself, never talks to workers and
// never reads the clock except through Config.Clock.
package deploy
