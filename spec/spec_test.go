package spec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// designExample is the example of DESIGN.md, "The app spec".
const designExample = `name: web
image: 127.0.0.1:5000/web:v2
replicas: 3
command: ["/bin/sh", "-c", "exec httpd -f -p $HIVEMIND_ADDR_HTTP -h /www"]
env: {GREETING: hello}
ports:
  - name: http
    protocol: http
    ingress: 8080
health:
  http: {port: http, path: /}
  interval: 1s
  timeout: 1s
  start_period: 5s
update:
  batch_size: 1
  min_healthy_time: 2s
  healthy_deadline: 30s
  progress_deadline: 2m
  auto_rollback: true
  drain_timeout: 5s
  stop_timeout: 10s
`

func sec(n float64) int64 { return int64(n * float64(time.Second)) }

func TestLoadDesignExample(t *testing.T) {
	got, err := Load([]byte(designExample))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &pb.AppSpec{
		Name:     "web",
		Image:    "127.0.0.1:5000/web:v2",
		Replicas: 3,
		Command:  []string{"/bin/sh", "-c", "exec httpd -f -p $HIVEMIND_ADDR_HTTP -h /www"},
		Env:      map[string]string{"GREETING": "hello"},
		Ports:    []*pb.Port{{Name: "http", Protocol: "http", Ingress: 8080}},
		Health: &pb.HealthSpec{
			Http:        &pb.HTTPCheck{Port: "http", Path: "/"},
			Interval:    sec(1),
			Timeout:     sec(1),
			StartPeriod: sec(5),
		},
		Update: &pb.UpdateSpec{
			BatchSize:        1,
			MinHealthyTime:   sec(2),
			HealthyDeadline:  sec(30),
			ProgressDeadline: sec(120),
			AutoRollback:     proto.Bool(true),
			DrainTimeout:     sec(5),
			StopTimeout:      sec(10),
		},
	}
	if !proto.Equal(got, want) {
		t.Fatalf("Load:\n got %v\nwant %v", got, want)
	}
}

func TestParseDefaults(t *testing.T) {
	defaultUpdate := &pb.UpdateSpec{
		BatchSize: 1, MinHealthyTime: sec(2), HealthyDeadline: sec(30),
		ProgressDeadline: sec(120), AutoRollback: proto.Bool(true),
		DrainTimeout: sec(5), StopTimeout: sec(10),
	}
	defaultHealth := &pb.HealthSpec{Interval: sec(1), Timeout: sec(1)}

	tests := []struct {
		name string
		yaml string
		want *pb.AppSpec
	}{
		{
			name: "smallest spec",
			yaml: "name: web\nimage: busybox\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 1,
				Health: defaultHealth, Update: defaultUpdate},
		},
		{
			name: "explicit zero replicas kept",
			yaml: "name: web\nimage: busybox\nreplicas: 0\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 0,
				Health: defaultHealth, Update: defaultUpdate},
		},
		{
			name: "null replicas is absent",
			yaml: "name: web\nimage: busybox\nreplicas: ~\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 1,
				Health: defaultHealth, Update: defaultUpdate},
		},
		{
			name: "auto_rollback defaults on in a partial update",
			yaml: "name: web\nimage: busybox\nupdate: {batch_size: 2}\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 1,
				Health: defaultHealth, Update: &pb.UpdateSpec{
					BatchSize: 2, MinHealthyTime: sec(2), HealthyDeadline: sec(30),
					ProgressDeadline: sec(120), AutoRollback: proto.Bool(true),
					DrainTimeout: sec(5), StopTimeout: sec(10),
				}},
		},
		{
			name: "auto_rollback false kept",
			yaml: "name: web\nimage: busybox\nupdate: {auto_rollback: false}\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 1,
				Health: defaultHealth, Update: &pb.UpdateSpec{
					BatchSize: 1, MinHealthyTime: sec(2), HealthyDeadline: sec(30),
					ProgressDeadline: sec(120), AutoRollback: proto.Bool(false),
					DrainTimeout: sec(5), StopTimeout: sec(10),
				}},
		},
		{
			name: "port protocol tcp, check path /",
			yaml: "name: db\nimage: redis\nports: [{name: redis}]\n" +
				"health: {http: {port: redis}}\n",
			want: &pb.AppSpec{Name: "db", Image: "redis", Replicas: 1,
				Ports: []*pb.Port{{Name: "redis", Protocol: "tcp"}},
				Health: &pb.HealthSpec{
					Http:     &pb.HTTPCheck{Port: "redis", Path: "/"},
					Interval: sec(1), Timeout: sec(1),
				},
				Update: defaultUpdate},
		},
		{
			name: "numbers in env are strings",
			yaml: "name: web\nimage: busybox\nenv: {PORT: 8080, DEBUG: true}\n",
			want: &pb.AppSpec{Name: "web", Image: "busybox", Replicas: 1,
				Env:    map[string]string{"PORT": "8080", "DEBUG": "true"},
				Health: defaultHealth, Update: defaultUpdate},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("Parse:\n got %v\nwant %v", got, tt.want)
			}
			if err := Validate(got); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestApplyDefaultsIdempotent(t *testing.T) {
	s, err := Parse([]byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	again := proto.Clone(s).(*pb.AppSpec)
	ApplyDefaults(again)
	if !proto.Equal(s, again) {
		t.Fatalf("second ApplyDefaults changed the spec:\n got %v\nwant %v", again, s)
	}

	empty := &pb.AppSpec{}
	ApplyDefaults(empty)
	if empty.Replicas != 0 || !empty.Update.GetAutoRollback() || empty.Update.BatchSize != 1 {
		t.Fatalf("ApplyDefaults on an empty spec: %v", empty)
	}
	ApplyDefaults(nil) // must not panic
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole error text
	}{
		{"bad duration",
			"name: web\nimage: x\nupdate:\n  batch_size: 1\n\n\n  min_healthy_time: 2x\n",
			`line 7: update.min_healthy_time: invalid duration "2x"`},
		{"unknown top-level field",
			"name: web\nimage: x\nreplica: 3\n",
			"line 3: replica: unknown field (want one of command, env, health, " +
				"image, name, ports, replicas, update)"},
		{"unknown nested field",
			"name: web\nimage: x\nhealth:\n  http: {port: http, url: /}\n",
			"line 4: health.http.url: unknown field (want one of path, port)"},
		{"unknown field in a list item",
			"name: web\nimage: x\nports:\n  - name: http\n    host_port: 80\n",
			"line 5: ports[0].host_port: unknown field (want one of ingress, name, protocol)"},
		{"replicas not a number",
			"name: web\nimage: x\nreplicas: three\n",
			`line 3: replicas: invalid integer "three"`},
		{"replicas too big",
			"name: web\nimage: x\nreplicas: 99999999999\n",
			`line 3: replicas: invalid integer "99999999999"`},
		{"ingress not a number",
			"name: web\nimage: x\nports: [{name: http, ingress: 80x}]\n",
			`line 3: ports[0].ingress: invalid integer "80x"`},
		{"auto_rollback not a boolean",
			"name: web\nimage: x\nupdate:\n  auto_rollback: yes\n",
			`line 4: update.auto_rollback: invalid boolean "yes" (want true or false)`},
		{"duration as a number",
			"name: web\nimage: x\nhealth:\n  interval: 5\n",
			`line 4: health.interval: invalid duration "5"`},
		{"command not a list",
			"name: web\nimage: x\ncommand: httpd -f\n",
			"line 3: command: want a list"},
		{"ports not a list",
			"name: web\nimage: x\nports: {name: http}\n",
			"line 3: ports: want a list"},
		{"name not a string",
			"name: [web]\nimage: x\n",
			"line 1: name: want a string"},
		{"health not a mapping",
			"name: web\nimage: x\nhealth: yes\n",
			"line 3: health: want a mapping"},
		{"field twice",
			"name: web\nimage: x\nname: api\n",
			"line 3: name: given twice"},
		{"env not a mapping",
			"name: web\nimage: x\nenv: [A=b]\n",
			"line 3: env: want a mapping"},
		{"not a mapping at all",
			"- web\n",
			"line 1: want a mapping"},
		{"empty", "", "empty spec"},
		{"two documents",
			"name: web\nimage: x\n---\nname: api\n",
			"line 3: more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Parse error:\n got %q\nwant %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %q does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse([]byte("name: web\nimage: [x\n"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "line") {
		t.Fatalf("Parse of broken YAML: got %v, want ErrInvalid naming a line", err)
	}
}

// valid returns a defaulted spec that passes Validate, for tests to break.
func valid() *pb.AppSpec {
	s := &pb.AppSpec{
		Name: "web", Image: "busybox", Replicas: 2,
		Ports: []*pb.Port{
			{Name: "http", Protocol: "http", Ingress: 8080},
			{Name: "admin"},
		},
		Health: &pb.HealthSpec{Http: &pb.HTTPCheck{Port: "http"}},
	}
	ApplyDefaults(s)
	return s
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(s *pb.AppSpec)
		field  string // "" means valid
		msg    string // part of the message
	}{
		{"valid", func(*pb.AppSpec) {}, "", ""},
		{"zero replicas", func(s *pb.AppSpec) { s.Replicas = 0 }, "", ""},
		{"no name", func(s *pb.AppSpec) { s.Name = "" }, "name", "required"},
		{"name upper case", func(s *pb.AppSpec) { s.Name = "Web" }, "name", "DNS label"},
		{"name underscore", func(s *pb.AppSpec) { s.Name = "my_web" }, "name", "DNS label"},
		{"name ends with dash", func(s *pb.AppSpec) { s.Name = "web-" }, "name", "DNS label"},
		{"name too long", func(s *pb.AppSpec) { s.Name = strings.Repeat("a", 64) }, "name", "DNS label"},
		{"no image", func(s *pb.AppSpec) { s.Image = "" }, "image", "required"},
		{"image with space", func(s *pb.AppSpec) { s.Image = "a b" }, "image", "white space"},
		{"negative replicas", func(s *pb.AppSpec) { s.Replicas = -1 }, "replicas", "negative"},
		{"replicas at the maximum", func(s *pb.AppSpec) { s.Replicas = MaxReplicas }, "", ""},
		{"replicas above the maximum", func(s *pb.AppSpec) { s.Replicas = 2147483647 }, "replicas", "maximum of 1000"},
		{"env key with NUL", func(s *pb.AppSpec) { s.Env = map[string]string{"A\x00B": "c"} }, "env", `"A\x00B"`},
		{"env value with NUL", func(s *pb.AppSpec) { s.Env = map[string]string{"DB": "x\x00y"} }, "env", `"DB"`},
		{"env key with =", func(s *pb.AppSpec) { s.Env = map[string]string{"A=B": "c"} }, "env", "A=B"},
		{"port without name", func(s *pb.AppSpec) { s.Ports[1].Name = "" }, "ports[1].name", "required"},
		{"port name with dash", func(s *pb.AppSpec) { s.Ports[1].Name = "my-port" }, "ports[1].name", "lower-case"},
		{"duplicate port name", func(s *pb.AppSpec) { s.Ports[1].Name = "http" }, "ports[1].name", "duplicate"},
		{"bad protocol", func(s *pb.AppSpec) { s.Ports[0].Protocol = "udp" }, "ports[0].protocol", "udp"},
		{"ingress too high", func(s *pb.AppSpec) { s.Ports[0].Ingress = 65536 }, "ports[0].ingress", "1..65535"},
		{"negative ingress", func(s *pb.AppSpec) { s.Ports[0].Ingress = -1 }, "ports[0].ingress", "1..65535"},
		{"same ingress twice", func(s *pb.AppSpec) { s.Ports[1].Ingress = 8080 }, "ports[1].ingress", `"http"`},
		{"check port unknown", func(s *pb.AppSpec) { s.Health.Http.Port = "web" }, "health.http.port", "not a port"},
		{"check port missing", func(s *pb.AppSpec) { s.Health.Http.Port = "" }, "health.http.port", "required"},
		{"check path relative", func(s *pb.AppSpec) { s.Health.Http.Path = "healthz" }, "health.http.path", "start with /"},
		{"tcp check port unknown", func(s *pb.AppSpec) {
			s.Health.Http = nil
			s.Health.Tcp = &pb.TCPCheck{Port: "db"}
		}, "health.tcp.port", "not a port"},
		{"two checks", func(s *pb.AppSpec) { s.Health.Tcp = &pb.TCPCheck{Port: "admin"} }, "health", "not both"},
		{"negative interval", func(s *pb.AppSpec) { s.Health.Interval = -sec(1) }, "health.interval", "negative"},
		{"negative timeout", func(s *pb.AppSpec) { s.Health.Timeout = -sec(1) }, "health.timeout", "negative"},
		{"negative start period", func(s *pb.AppSpec) { s.Health.StartPeriod = -sec(1) }, "health.start_period", "negative"},
		{"zero interval with a check", func(s *pb.AppSpec) { s.Health.Interval = 0 }, "health.interval", "positive"},
		{"zero batch size", func(s *pb.AppSpec) { s.Update.BatchSize = 0 }, "update.batch_size", "at least 1"},
		{"negative min healthy time", func(s *pb.AppSpec) { s.Update.MinHealthyTime = -1 }, "update.min_healthy_time", "negative"},
		{"negative healthy deadline", func(s *pb.AppSpec) { s.Update.HealthyDeadline = -1 }, "update.healthy_deadline", "negative"},
		{"negative progress deadline", func(s *pb.AppSpec) { s.Update.ProgressDeadline = -1 }, "update.progress_deadline", "negative"},
		{"negative drain timeout", func(s *pb.AppSpec) { s.Update.DrainTimeout = -1 }, "update.drain_timeout", "negative"},
		{"negative stop timeout", func(s *pb.AppSpec) { s.Update.StopTimeout = -1 }, "update.stop_timeout", "negative"},
		{"min healthy time past the deadline", func(s *pb.AppSpec) { s.Update.MinHealthyTime = sec(30) },
			"update.min_healthy_time", "shorter than update.healthy_deadline"},
		{"healthy deadline past progress", func(s *pb.AppSpec) { s.Update.HealthyDeadline = sec(180) },
			"update.healthy_deadline", "progress_deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.modify(s)
			err := Validate(s)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate: %v, want a *FieldError for %s", err, tt.field)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
				t.Fatalf("Validate: field %q msg %q, want field %q msg containing %q",
					fe.Field, fe.Msg, tt.field, tt.msg)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate error %q does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestLoadValidationErrorHasLine(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"bad name", "image: x\nname: Web\n",
			`line 2: name: "Web" is not a DNS label (lower-case letters, digits and '-', at most 63)`},
		{"missing image", "name: web\n", "image: required"},
		{"unknown check port",
			"name: web\nimage: x\nports: [{name: http}]\nhealth:\n  tcp:\n    port: web\n",
			`line 6: health.tcp.port: "web" is not a port of the app`},
		{"negative duration",
			"name: web\nimage: x\nupdate:\n  stop_timeout: -1s\n",
			"line 4: update.stop_timeout: must not be negative, got -1s"},
		{"duplicate port",
			"name: web\nimage: x\nports:\n- name: http\n- name: http\n",
			`line 5: ports[1].name: duplicate port name "http"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Load error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}

// A spec posted as JSON with an update block that leaves auto_rollback
// out has it on, as a YAML spec does; an explicit false stays false.
func TestAutoRollbackDefaultThroughJSON(t *testing.T) {
	for body, want := range map[string]bool{
		`{"name":"ar","image":"x","update":{"batch_size":2}}`:                       true,
		`{"name":"ar","image":"x"}`:                                                 true,
		`{"name":"ar","image":"x","update":{"batch_size":2,"auto_rollback":false}}`: false,
	} {
		s := &pb.AppSpec{}
		if err := protojson.Unmarshal([]byte(body), s); err != nil {
			t.Fatal(err)
		}
		ApplyDefaults(s)
		if got := s.GetUpdate().GetAutoRollback(); got != want {
			t.Errorf("%s: auto_rollback %t, want %t", body, got, want)
		}
	}
}
