package dns

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// fixture: web has three tasks on two workers (t1 and t2 share an
// IP), empty is known with no healthy task.
func fixture() map[string][]Endpoint {
	return map[string][]Endpoint{
		"web": {
			{TaskID: "t1", IP: "10.0.0.1",
				Ports: map[string]int{"http": 20000, "admin": 20001}},
			{TaskID: "t2", IP: "10.0.0.1",
				Ports: map[string]int{"http": 20002}},
			{TaskID: "t3", IP: "10.0.0.2",
				Ports: map[string]int{"http": 20000}},
		},
		"empty": nil,
	}
}

var transports = []string{"udp", "tcp"}

func TestAnswers(t *testing.T) {
	s := startServer(t)
	s.Update(fixture())

	cases := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string // A: "ip"; SRV: "target:port"
		extra  []string // "name=ip"
	}{
		{name: "A dedupes IPs", qname: "web.hivemind.",
			qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"10.0.0.1", "10.0.0.2"}},
		{name: "case-insensitive", qname: "WEB.HiveMind.",
			qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"10.0.0.1", "10.0.0.2"}},
		{name: "SRV of the app", qname: "web.hivemind.",
			qtype: dns.TypeSRV, rcode: dns.RcodeSuccess,
			answer: []string{"t1.web.hivemind.:20000",
				"t1.web.hivemind.:20001", "t2.web.hivemind.:20002",
				"t3.web.hivemind.:20000"},
			extra: []string{"t1.web.hivemind.=10.0.0.1",
				"t2.web.hivemind.=10.0.0.1",
				"t3.web.hivemind.=10.0.0.2"}},
		{name: "SRV of a port", qname: "_http._tcp.web.hivemind.",
			qtype: dns.TypeSRV, rcode: dns.RcodeSuccess,
			answer: []string{"t1.web.hivemind.:20000",
				"t2.web.hivemind.:20002", "t3.web.hivemind.:20000"},
			extra: []string{"t1.web.hivemind.=10.0.0.1",
				"t2.web.hivemind.=10.0.0.1",
				"t3.web.hivemind.=10.0.0.2"}},
		{name: "SRV of a port one task has",
			qname: "_Admin._TCP.web.hivemind.", qtype: dns.TypeSRV,
			rcode:  dns.RcodeSuccess,
			answer: []string{"t1.web.hivemind.:20001"},
			extra:  []string{"t1.web.hivemind.=10.0.0.1"}},
		{name: "SRV target resolves", qname: "t3.web.hivemind.",
			qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: []string{"10.0.0.2"}},
		{name: "unknown app is NXDOMAIN", qname: "api.hivemind.",
			qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "unknown task is NXDOMAIN", qname: "t9.web.hivemind.",
			qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "unknown app SRV is NXDOMAIN",
			qname: "_http._tcp.api.hivemind.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError},
		{name: "app with no endpoint is NODATA",
			qname: "empty.hivemind.", qtype: dns.TypeA,
			rcode: dns.RcodeSuccess},
		{name: "SRV of app with no endpoint is NODATA",
			qname: "_http._tcp.empty.hivemind.", qtype: dns.TypeSRV,
			rcode: dns.RcodeSuccess},
		{name: "AAAA of an IPv4 app is NODATA",
			qname: "web.hivemind.", qtype: dns.TypeAAAA,
			rcode: dns.RcodeSuccess},
		{name: "outside the domain is REFUSED",
			qname: "example.com.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused},
		{name: "domain as a suffix label is REFUSED",
			qname: "web.nothivemind.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused},
	}

	for _, network := range transports {
		for _, tc := range cases {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				r := query(t, s, network, tc.qname, tc.qtype)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode = %s, want %s",
						dns.RcodeToString[r.Rcode],
						dns.RcodeToString[tc.rcode])
				}
				checkSet(t, "answer", records(r.Answer), tc.answer)
				checkSet(t, "extra", extras(r.Extra), tc.extra)
				checkTTLs(t, r)
				checkNegative(t, r)
			})
		}
	}
}

func TestUpdateReplacesTheTable(t *testing.T) {
	s := startServer(t)
	s.Update(fixture())

	// t3 goes away: its IP, its SRV records and its name with it.
	apps := fixture()
	apps["web"] = apps["web"][:2]
	s.Update(apps)

	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			r := query(t, s, network, "web.hivemind.", dns.TypeA)
			checkSet(t, "A", records(r.Answer), []string{"10.0.0.1"})

			r = query(t, s, network, "web.hivemind.", dns.TypeSRV)
			checkSet(t, "SRV", records(r.Answer), []string{
				"t1.web.hivemind.:20000", "t1.web.hivemind.:20001",
				"t2.web.hivemind.:20002"})

			r = query(t, s, network, "t3.web.hivemind.", dns.TypeA)
			if r.Rcode != dns.RcodeNameError {
				t.Errorf("removed task: rcode = %s, want NXDOMAIN",
					dns.RcodeToString[r.Rcode])
			}
		})
	}

	// The whole table is replaced: an app left out is gone.
	s.Update(map[string][]Endpoint{"empty": nil})
	r := query(t, s, "udp", "web.hivemind.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("removed app: rcode = %s, want NXDOMAIN",
			dns.RcodeToString[r.Rcode])
	}
}

func TestConcurrentQueriesDuringUpdates(t *testing.T) {
	s := startServer(t)
	one := map[string][]Endpoint{"web": {
		{TaskID: "a", IP: "10.0.1.1", Ports: map[string]int{"http": 1}},
	}}
	two := map[string][]Endpoint{"web": {
		{TaskID: "b", IP: "10.0.2.1", Ports: map[string]int{"http": 2}},
		{TaskID: "c", IP: "10.0.2.2", Ports: map[string]int{"http": 3}},
	}}
	s.Update(one)
	s.log.SetLevel(hclog.Info) // no line per Update

	// Every answer must be one whole table or the other.
	valid := [][]string{{"10.0.1.1"}, {"10.0.2.1", "10.0.2.2"}}
	stop := make(chan struct{})
	var updates sync.WaitGroup
	updates.Add(1)
	go func() {
		defer updates.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.Update([]map[string][]Endpoint{one, two}[i%2])
		}
	}()

	var queriers sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		queriers.Add(1)
		go func() {
			defer queriers.Done()
			errs <- queryLoop(s, transports[i%2], 50, valid)
		}()
	}
	queriers.Wait()
	close(stop)
	updates.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// queryLoop asks for web's A records n times and checks each answer
// is one of valid.
func queryLoop(s *Server, network string, n int, valid [][]string) error {
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	for range n {
		m := new(dns.Msg).SetQuestion("web.hivemind.", dns.TypeA)
		r, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			return fmt.Errorf("%s query: %w", network, err)
		}
		got := records(r.Answer)
		slices.Sort(got)
		if !slices.ContainsFunc(valid, func(v []string) bool {
			return slices.Equal(v, got)
		}) {
			return fmt.Errorf("%s answer %v is neither table", network, got)
		}
	}
	return nil
}

func TestLargeAnswerTruncatedOverUDP(t *testing.T) {
	s := startServer(t)
	var eps []Endpoint
	for i := range 100 {
		eps = append(eps, Endpoint{TaskID: fmt.Sprintf("t%d", i),
			IP: fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)})
	}
	s.Update(map[string][]Endpoint{"big": eps})

	r := query(t, s, "udp", "big.hivemind.", dns.TypeA)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("udp: truncated = %v with %d answers, want TC set",
			r.Truncated, len(r.Answer))
	}
	r = query(t, s, "tcp", "big.hivemind.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("tcp: truncated = %v with %d answers, want 100",
			r.Truncated, len(r.Answer))
	}
}

func TestEDNSRaisesTheUDPLimit(t *testing.T) {
	s := startServer(t)
	var eps []Endpoint
	for i := range 100 {
		eps = append(eps, Endpoint{TaskID: fmt.Sprintf("t%d", i),
			IP: fmt.Sprintf("10.0.0.%d", i+1)})
	}
	s.Update(map[string][]Endpoint{"big": eps})

	plain := query(t, s, "udp", "big.hivemind.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	m := new(dns.Msg).SetQuestion("big.hivemind.", dns.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("edns query: %v", err)
	}
	if r.IsEdns0() == nil {
		t.Errorf("edns reply has no OPT record")
	}
	if len(r.Answer) <= len(plain.Answer) {
		t.Errorf("edns reply has %d answers, plain %d: want more",
			len(r.Answer), len(plain.Answer))
	}
}

func TestDroppedAdditionalsDoNotTruncate(t *testing.T) {
	s := startServer(t)
	var eps []Endpoint
	for i := range 10 {
		eps = append(eps, Endpoint{TaskID: fmt.Sprintf("t%d", i),
			IP:    fmt.Sprintf("10.0.0.%d", i+1),
			Ports: map[string]int{"http": 20000 + i}})
	}
	s.Update(map[string][]Endpoint{"web": eps})

	r := query(t, s, "udp", "_http._tcp.web.hivemind.", dns.TypeSRV)
	if len(r.Answer) != 10 || len(r.Extra) >= 10 {
		t.Fatalf("got %d answers and %d additionals, want 10 and "+
			"fewer (fixture no longer overflows 512 bytes)",
			len(r.Answer), len(r.Extra))
	}
	if r.Truncated {
		t.Errorf("TC set though every answer fits")
	}
}

func TestAnswersRotate(t *testing.T) {
	s := startServer(t)
	s.Update(fixture())

	first := make(map[string]bool)
	for range 4 {
		r := query(t, s, "udp", "web.hivemind.", dns.TypeA)
		first[records(r.Answer)[0]] = true
	}
	if len(first) != 2 {
		t.Errorf("first records over 4 queries = %v, want both IPs", first)
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(Config{BindAddr: "127.0.0.1", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second start = %v, want ErrStarted", err)
	}

	// A second server on the same port must fail to bind.
	port := s.Addr()[strings.LastIndex(s.Addr(), ":")+1:]
	cfg := Config{BindAddr: "127.0.0.1", Logger: testLogger(t)}
	fmt.Sscan(port, &cfg.Port)
	other, err := New(cfg)
	if err != nil {
		t.Fatalf("new other: %v", err)
	}
	if err := other.Start(); err == nil {
		other.Close()
		t.Errorf("second server on port %s started, want bind error", port)
	}

	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("close %d: %v", i+1, err)
		}
	}
	if err := s.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close = %v, want ErrClosed", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "defaults with address", ok: true,
			cfg: Config{BindAddr: "10.0.0.1", Port: DefaultPort}},
		{name: "no address", cfg: DefaultConfig()},
		{name: "host name", cfg: Config{BindAddr: "localhost"}},
		{name: "port too big", cfg: Config{BindAddr: "10.0.0.1", Port: 70000}},
		{name: "negative port", cfg: Config{BindAddr: "10.0.0.1", Port: -1}},
		{name: "bad domain", cfg: Config{BindAddr: "10.0.0.1",
			Domain: "a..b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok && err != nil {
				t.Errorf("validate: %v, want ok", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("validate = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// startServer starts a server on 127.0.0.1 with a free port, closed
// when the test ends.
func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{BindAddr: "127.0.0.1", Port: 0,
		Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func query(t *testing.T, s *Server, network, name string,
	qtype uint16) *dns.Msg {

	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg).SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name,
			dns.TypeToString[qtype], err)
	}
	return r
}

// records renders A records as "ip" and SRV as "target:port"; other
// types as dns prints them.
func records(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%s:%d", rr.Target, rr.Port))
		case *dns.OPT:
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

// extras renders additional A records as "name=ip", leaving out the
// OPT record.
func extras(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.Hdr.Name+"="+a.A.String())
		} else if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr.String())
		}
	}
	return out
}

func checkSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)),
		slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func checkTTLs(t *testing.T, r *dns.Msg) {
	t.Helper()
	for _, rr := range slices.Concat(r.Answer, r.Ns, r.Extra) {
		if h := rr.Header(); h.Ttl != DefaultTTL {
			t.Errorf("%s: ttl %d, want %d", h.Name, h.Ttl, DefaultTTL)
		}
	}
}

// checkNegative checks that an answer in the zone with no record
// carries the zone's SOA, and that a refusal carries nothing.
func checkNegative(t *testing.T, r *dns.Msg) {
	t.Helper()
	if r.Rcode == dns.RcodeRefused {
		if len(r.Answer)+len(r.Ns) != 0 || r.Authoritative {
			t.Errorf("refused reply has records or the AA bit: %v", r)
		}
		return
	}
	if !r.Authoritative {
		t.Errorf("reply lacks the AA bit")
	}
	if len(r.Answer) > 0 {
		return
	}
	if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("negative reply authority = %v, want the SOA", r.Ns)
	}
}

// testLogger sends the server's logs to t.Log.
func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(),
		Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
