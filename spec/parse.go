package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// The file format. Durations stay strings here so that a bad one can be
// reported with its field and line; pointers mark the fields whose absence
// means something different from their zero value.
type (
	fileSpec struct {
		Name     string            `yaml:"name"`
		Image    string            `yaml:"image"`
		Replicas *int32            `yaml:"replicas"`
		Command  []string          `yaml:"command"`
		Env      map[string]string `yaml:"env"`
		Ports    []filePort        `yaml:"ports"`
		Health   *fileHealth       `yaml:"health"`
		Update   *fileUpdate       `yaml:"update"`
	}

	filePort struct {
		Name     string `yaml:"name"`
		Protocol string `yaml:"protocol"`
		Ingress  int32  `yaml:"ingress"`
	}

	fileHealth struct {
		HTTP        *fileHTTPCheck `yaml:"http"`
		TCP         *fileTCPCheck  `yaml:"tcp"`
		Interval    duration       `yaml:"interval"`
		Timeout     duration       `yaml:"timeout"`
		StartPeriod duration       `yaml:"start_period"`
	}

	fileHTTPCheck struct {
		Port string `yaml:"port"`
		Path string `yaml:"path"`
	}

	fileTCPCheck struct {
		Port string `yaml:"port"`
	}

	fileUpdate struct {
		BatchSize        int32    `yaml:"batch_size"`
		MinHealthyTime   duration `yaml:"min_healthy_time"`
		HealthyDeadline  duration `yaml:"healthy_deadline"`
		ProgressDeadline duration `yaml:"progress_deadline"`
		AutoRollback     *bool    `yaml:"auto_rollback"`
		DrainTimeout     duration `yaml:"drain_timeout"`
		StopTimeout      duration `yaml:"stop_timeout"`
	}
)

// duration is a Go duration string such as "2s" or "1m30s".
type duration string

var durationType = reflect.TypeOf(duration(""))

// nanos converts a duration already checked by checkNode; empty is zero.
func (d duration) nanos() int64 {
	if d == "" {
		return 0
	}
	v, _ := time.ParseDuration(string(d))
	return int64(v)
}

// Parse decodes a YAML app spec strictly and returns it with defaults
// applied (see ApplyDefaults). An unknown field, a value of the wrong kind
// or a bad duration is a *FieldError naming the field and its line, e.g.
// `line 7: update.min_healthy_time: invalid duration "2x"`. Parse does not
// run Validate; Load does both.
func Parse(data []byte) (*pb.AppSpec, error) {
	s, _, err := parse(data)
	return s, err
}

// Load parses a YAML app spec, applies defaults and validates it. Errors
// carry the line of the field they name.
func Load(data []byte) (*pb.AppSpec, error) {
	s, lines, err := parse(data)
	if err != nil {
		return nil, err
	}
	if err := Validate(s); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) && fe.Line == 0 {
			fe.Line = lineOf(lines, fe.Field)
		}
		return nil, err
	}
	return s, nil
}

// parse returns the spec and the line of every field path it saw.
func parse(data []byte) (*pb.AppSpec, map[string]int, error) {
	// Walk the node tree first: it knows lines and paths, which the
	// decoder's own errors do not name.
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &FieldError{Msg: "empty spec"}
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, &FieldError{Line: extra.Line,
			Msg: "more than one YAML document"}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	lines := map[string]int{}
	if err := checkNode(doc, reflect.TypeOf(fileSpec{}), "", lines); err != nil {
		return nil, nil, err
	}

	// The walk has vetted every field; the strict decode is a second guard.
	var f fileSpec
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&f); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s := f.toProto()
	ApplyDefaults(s)
	return s, lines, nil
}

// lineOf finds the line of a field path, or of its closest parent.
func lineOf(lines map[string]int, field string) int {
	for p := field; p != ""; {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// checkNode checks that n fits type t, recording the line of each path.
func checkNode(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // absent, the same as leaving the field out
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, args ...any) error {
		return &FieldError{Field: path, Line: n.Line,
			Msg: fmt.Sprintf(format, args...)}
	}

	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("want a duration such as 2s or 1m")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return bad("invalid duration %q", n.Value)
		}
		return nil
	case t.Kind() == reflect.Struct:
		return checkStruct(n, t, path, lines)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("want a list")
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = item.Line
			if err := checkNode(item, t.Elem(), p, lines); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		return checkMap(n, t, path, lines)
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("want a string")
		}
		return nil
	case t.Kind() == reflect.Int32:
		var v int32
		if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil {
			return bad("invalid integer %q", n.Value)
		}
		return nil
	case t.Kind() == reflect.Bool:
		// Only true and false: yaml.v3 would take YAML 1.1's yes and on.
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			return bad("invalid boolean %q (want true or false)", n.Value)
		}
		return nil
	}
	return bad("unsupported field type %s", t)
}

func checkStruct(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind != yaml.MappingNode {
		return &FieldError{Field: path, Line: n.Line, Msg: "want a mapping"}
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fields[f.Tag.Get("yaml")] = f.Type
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		p := join(path, key.Value)
		ft, ok := fields[key.Value]
		if !ok {
			return &FieldError{Field: p, Line: key.Line,
				Msg: "unknown field (want one of " + names(fields) + ")"}
		}
		if seen[key.Value] {
			return &FieldError{Field: p, Line: key.Line, Msg: "given twice"}
		}
		seen[key.Value] = true
		lines[p] = key.Line
		if err := checkNode(val, ft, p, lines); err != nil {
			return err
		}
	}
	return nil
}

func checkMap(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind != yaml.MappingNode {
		return &FieldError{Field: path, Line: n.Line, Msg: "want a mapping"}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		p := join(path, key.Value)
		if key.Kind != yaml.ScalarNode {
			return &FieldError{Field: path, Line: key.Line,
				Msg: "want string keys"}
		}
		if seen[key.Value] {
			return &FieldError{Field: p, Line: key.Line, Msg: "given twice"}
		}
		seen[key.Value] = true
		lines[p] = key.Line
		if err := checkNode(val, t.Elem(), p, lines); err != nil {
			return err
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func names(fields map[string]reflect.Type) string {
	out := make([]string, 0, len(fields))
	for k := range fields {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// toProto converts the file form. Presence decides replicas and
// auto_rollback here, because a *pb.AppSpec cannot tell absent from zero.
func (f *fileSpec) toProto() *pb.AppSpec {
	s := &pb.AppSpec{
		Name:     f.Name,
		Image:    f.Image,
		Replicas: DefaultReplicas,
		Command:  f.Command,
		Env:      f.Env,
	}
	if f.Replicas != nil {
		s.Replicas = *f.Replicas
	}
	for _, p := range f.Ports {
		s.Ports = append(s.Ports, &pb.Port{
			Name: p.Name, Protocol: p.Protocol, Ingress: p.Ingress,
		})
	}
	if h := f.Health; h != nil {
		s.Health = &pb.HealthSpec{
			Interval:    h.Interval.nanos(),
			Timeout:     h.Timeout.nanos(),
			StartPeriod: h.StartPeriod.nanos(),
		}
		if h.HTTP != nil {
			s.Health.Http = &pb.HTTPCheck{Port: h.HTTP.Port, Path: h.HTTP.Path}
		}
		if h.TCP != nil {
			s.Health.Tcp = &pb.TCPCheck{Port: h.TCP.Port}
		}
	}
	s.Update = &pb.UpdateSpec{AutoRollback: proto.Bool(true)}
	if u := f.Update; u != nil {
		s.Update = &pb.UpdateSpec{
			BatchSize:        u.BatchSize,
			MinHealthyTime:   u.MinHealthyTime.nanos(),
			HealthyDeadline:  u.HealthyDeadline.nanos(),
			ProgressDeadline: u.ProgressDeadline.nanos(),
			AutoRollback:     proto.Bool(u.AutoRollback == nil || *u.AutoRollback),
			DrainTimeout:     u.DrainTimeout.nanos(),
			StopTimeout:      u.StopTimeout.nanos(),
		}
	}
	return s
}
