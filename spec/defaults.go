package spec

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// Defaults for what a spec may leave out.
const (
	DefaultReplicas         = 1
	DefaultHealthInterval   = time.Second
	DefaultHealthTimeout    = time.Second
	DefaultHTTPCheckPath    = "/"
	DefaultBatchSize        = 1
	DefaultMinHealthyTime   = 2 * time.Second
	DefaultHealthyDeadline  = 30 * time.Second
	DefaultProgressDeadline = 2 * time.Minute
	DefaultDrainTimeout     = 5 * time.Second
	DefaultStopTimeout      = 10 * time.Second
	DefaultProtocol         = pb.ProtocolTCP
)

// ApplyDefaults fills the zero fields of s in place: health interval and
// timeout 1s (start_period stays 0), an HTTP check path of "/", update
// batch_size 1, min_healthy_time 2s, healthy_deadline 30s,
// progress_deadline 2m, drain_timeout 5s, stop_timeout 10s, and protocol
// "tcp" for ports that name none. A nil Health or Update is created, and
// an absent auto_rollback is on. It is idempotent.
//
// Replicas is left alone: a *pb.AppSpec cannot tell an explicit 0 from an
// absent field, so Parse decides that default, and a spec posted as JSON
// without replicas asks for none.
// TODO: an `optional` replicas in the proto would let the API default it too.
//
// A zero duration means "the default"; an explicit 0s in a file therefore
// also gets the default.
func ApplyDefaults(s *pb.AppSpec) {
	if s == nil {
		return
	}
	for _, p := range s.Ports {
		if p.Protocol == "" {
			p.Protocol = DefaultProtocol
		}
	}

	if s.Health == nil {
		s.Health = &pb.HealthSpec{}
	}
	h := s.Health
	setDur(&h.Interval, DefaultHealthInterval)
	setDur(&h.Timeout, DefaultHealthTimeout)
	if h.Http != nil && h.Http.Path == "" {
		h.Http.Path = DefaultHTTPCheckPath
	}

	if s.Update == nil {
		s.Update = &pb.UpdateSpec{}
	}
	u := s.Update
	if u.AutoRollback == nil {
		u.AutoRollback = proto.Bool(true)
	}
	if u.BatchSize == 0 {
		u.BatchSize = DefaultBatchSize
	}
	setDur(&u.MinHealthyTime, DefaultMinHealthyTime)
	setDur(&u.HealthyDeadline, DefaultHealthyDeadline)
	setDur(&u.ProgressDeadline, DefaultProgressDeadline)
	setDur(&u.DrainTimeout, DefaultDrainTimeout)
	setDur(&u.StopTimeout, DefaultStopTimeout)
}

func setDur(field *int64, def time.Duration) {
	if *field == 0 {
		*field = int64(def)
	}
}
