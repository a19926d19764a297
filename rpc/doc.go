// Package rpc serves a manager's network API: the gRPC services pb.Control,
// pb.Worker and pb.Peer, and the REST gateway over Control on the HTTP port
// (routes in proto/api.yaml) with GET /v1/snapshot, GET /v1/health and GET
// /metrics (Prometheus: this manager's own Raft state and rollout engine
// counters, as in its ManagerStatus).
//
// Control methods (except ClusterStatus), Worker.Register and Worker.Report
// run on the Raft leader: a follower forwards them, with the caller's
// deadline, to the leader's gRPC address. Reads are forwarded too, and the
// leader answers none of these methods before Raft confirms that it still
// leads and has applied every earlier term's entries (ConsistentReader):
// reads are linearizable, so no client reads a value older than a write
// acknowledged before its read began. Worker.Assignments and
// Worker.Endpoints are served from the local replica on any manager, so
// workers keep their assignments, ingress and DNS while the cluster has no
// leader.
//
// The package owns the translation between requests and Raft commands and
// between Go errors and gRPC status codes. It never applies state itself
// (everything goes through Raft.Propose), never places tasks and never
// drives rollouts: those belong to fsm, scheduler and deploy.
//
// Every transport takes its options from Config (gRPC server and dial
// options, the HTTP server's TLS config) so that TLS slots in without
// touching the handlers.
package rpc
