package spec

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// MaxReplicas is the most replicas an app may ask for. It bounds what one
// request can make the leader allocate and place: a manager must not fall
// over because a client asked for two billion tasks.
const MaxReplicas = 1000

var (
	// dnsLabel is an RFC 1123 label in lower case: app names become
	// <app>.hivemind in DNS.
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

	// portName must make a clean HIVEMIND_PORT_<NAME> variable.
	portName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

// Validate checks a spec after ApplyDefaults and returns the first problem
// as a *FieldError naming the field (it wraps ErrInvalid), or nil.
func Validate(s *pb.AppSpec) error {
	if s == nil {
		return &FieldError{Msg: "no spec"}
	}
	if err := validateTop(s); err != nil {
		return err
	}
	ports, err := validatePorts(s.Ports)
	if err != nil {
		return err
	}
	if err := validateHealth(s.Health, ports); err != nil {
		return err
	}
	return validateUpdate(s.Update)
}

func validateTop(s *pb.AppSpec) error {
	switch {
	case s.Name == "":
		return fieldErr("name", "required")
	case !dnsLabel.MatchString(s.Name):
		return fieldErr("name", "%q is not a DNS label "+
			"(lower-case letters, digits and '-', at most 63)", s.Name)
	case strings.TrimSpace(s.Image) == "":
		return fieldErr("image", "required")
	case strings.ContainsAny(s.Image, " \t\n"):
		return fieldErr("image", "%q contains white space", s.Image)
	case s.Replicas < 0:
		return fieldErr("replicas", "must not be negative, got %d", s.Replicas)
	case s.Replicas > MaxReplicas:
		return fieldErr("replicas", "%d is above the maximum of %d",
			s.Replicas, MaxReplicas)
	}
	return validateEnv(s.Env)
}

// validateEnv refuses what the container runtime cannot pass to a process:
// a NUL ends a C string, so every task of the app would fail to start.
func validateEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fieldErr("env", "invalid variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return fieldErr("env", "variable %q: value contains a NUL byte", k)
		}
	}
	return nil
}

// validatePorts returns the set of port names.
func validatePorts(ports []*pb.Port) (map[string]bool, error) {
	names := map[string]bool{}
	ingress := map[int32]string{}
	for i, p := range ports {
		f := fmt.Sprintf("ports[%d]", i)
		switch {
		case p == nil:
			return nil, fieldErr(f, "empty port")
		case p.Name == "":
			return nil, fieldErr(f+".name", "required")
		case !portName.MatchString(p.Name):
			return nil, fieldErr(f+".name", "%q must be lower-case letters, "+
				"digits and '_', starting with a letter", p.Name)
		case names[p.Name]:
			return nil, fieldErr(f+".name", "duplicate port name %q", p.Name)
		case p.Protocol != pb.ProtocolHTTP && p.Protocol != pb.ProtocolTCP:
			return nil, fieldErr(f+".protocol", "%q is not http or tcp", p.Protocol)
		case p.Ingress < 0 || p.Ingress > 65535:
			return nil, fieldErr(f+".ingress", "%d is not a port in 1..65535", p.Ingress)
		}
		if other, ok := ingress[p.Ingress]; ok && p.Ingress != 0 {
			return nil, fieldErr(f+".ingress", "%d is also the ingress of port %q",
				p.Ingress, other)
		}
		names[p.Name] = true
		ingress[p.Ingress] = p.Name
	}
	return names, nil
}

func validateHealth(h *pb.HealthSpec, ports map[string]bool) error {
	if h == nil {
		return nil
	}
	checks := 0
	if c := h.Http; c != nil {
		checks++
		switch {
		case c.Port == "":
			return fieldErr("health.http.port", "required")
		case !ports[c.Port]:
			return fieldErr("health.http.port", "%q is not a port of the app", c.Port)
		case !strings.HasPrefix(c.Path, "/"):
			return fieldErr("health.http.path", "%q must start with /", c.Path)
		}
	}
	if c := h.Tcp; c != nil {
		checks++
		switch {
		case c.Port == "":
			return fieldErr("health.tcp.port", "required")
		case !ports[c.Port]:
			return fieldErr("health.tcp.port", "%q is not a port of the app", c.Port)
		}
	}
	if checks > 1 {
		return fieldErr("health", "give one check, http or tcp, not both")
	}

	if err := nonNegative("health.interval", h.Interval); err != nil {
		return err
	}
	if err := nonNegative("health.timeout", h.Timeout); err != nil {
		return err
	}
	if err := nonNegative("health.start_period", h.StartPeriod); err != nil {
		return err
	}
	if checks > 0 && h.Interval == 0 {
		return fieldErr("health.interval", "must be positive with a check")
	}
	if checks > 0 && h.Timeout == 0 {
		return fieldErr("health.timeout", "must be positive with a check")
	}
	return nil
}

func validateUpdate(u *pb.UpdateSpec) error {
	if u == nil {
		return nil
	}
	if u.BatchSize < 1 {
		return fieldErr("update.batch_size", "must be at least 1, got %d", u.BatchSize)
	}
	durs := []struct {
		field string
		v     int64
	}{
		{"update.min_healthy_time", u.MinHealthyTime},
		{"update.healthy_deadline", u.HealthyDeadline},
		{"update.progress_deadline", u.ProgressDeadline},
		{"update.drain_timeout", u.DrainTimeout},
		{"update.stop_timeout", u.StopTimeout},
	}
	for _, d := range durs {
		if err := nonNegative(d.field, d.v); err != nil {
			return err
		}
	}

	// A task must be able to count as healthy before its batch times out,
	// and a batch before the whole deployment does.
	if u.HealthyDeadline > 0 && u.MinHealthyTime >= u.HealthyDeadline {
		return fieldErr("update.min_healthy_time",
			"%s must be shorter than update.healthy_deadline (%s)",
			time.Duration(u.MinHealthyTime), time.Duration(u.HealthyDeadline))
	}
	if u.ProgressDeadline > 0 && u.HealthyDeadline > u.ProgressDeadline {
		return fieldErr("update.healthy_deadline",
			"%s must not be longer than update.progress_deadline (%s)",
			time.Duration(u.HealthyDeadline), time.Duration(u.ProgressDeadline))
	}
	return nil
}

func nonNegative(field string, v int64) error {
	if v < 0 {
		return fieldErr(field, "must not be negative, got %s", time.Duration(v))
	}
	return nil
}
