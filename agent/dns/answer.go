package dns

import (
	"net"
	"strings"

	"github.com/miekg/dns"
)

// udpSize is the UDP payload size advertised to EDNS(0) clients; 1232
// avoids IP fragmentation on any path (DNS flag day 2020).
const udpSize = 1232

// SRV fields: every endpoint is equally preferred.
const (
	srvPriority = 0
	srvWeight   = 1
)

// answer builds the reply to r from the current table. tcp says which
// transport r came on, which bounds the reply size.
func (s *Server) answer(r *dns.Msg, tcp bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true

	switch {
	case len(r.Question) != 1:
		m.Rcode = dns.RcodeFormatError
	case !s.inZone(r.Question[0]):
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
	default:
		s.resolve(m, r.Question[0])
	}

	fit(m, r, tcp)
	return m
}

// inZone reports whether q is an Internet-class question for a name
// in the server's domain.
func (s *Server) inZone(q dns.Question) bool {
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return false
	}
	return dns.IsSubDomain(s.zone, strings.ToLower(q.Name))
}

// resolve fills m's answer for q, a question in the zone. The owner
// name of every answer is q.Name as asked, so its case survives.
func (s *Server) resolve(m *dns.Msg, q dns.Question) {
	t := s.table.Load()
	name := strings.ToLower(q.Name)
	labels := dns.SplitDomainName(strings.TrimSuffix(name, s.zone))

	found := true
	switch {
	case len(labels) == 0: // the zone apex
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, s.soa(t))
		}
	case t.apps[labels[len(labels)-1]] == nil:
		found = false
	default:
		app := t.apps[labels[len(labels)-1]]
		found = s.resolveApp(m, q, app, labels)
	}

	// Negative answers carry the SOA, whose TTL bounds how long a
	// resolver caches them (RFC 2308).
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, s.soa(t))
	}
}

// resolveApp answers q for a name under a known app: the app itself,
// one of its tasks, or one of its _PORT._tcp names. It returns false
// if the name does not exist.
func (s *Server) resolveApp(m *dns.Msg, q dns.Question,
	app *appRecords, labels []string) bool {

	appName := labels[len(labels)-1]
	switch len(labels) {
	case 1: // APP
		if wants(q.Qtype, dns.TypeSRV) {
			s.addSRV(m, q.Name, appName, app, app.targets)
		}
		s.addAddrs(m, q, app.ips)
		return true

	case 2: // TASKID.APP, or the empty non-terminal _tcp.APP
		if labels[0] == "_tcp" {
			return true
		}
		ip, ok := app.tasks[labels[0]]
		if ok {
			s.addAddrs(m, q, []net.IP{ip})
		}
		return ok

	case 3: // _PORT._tcp.APP
		if labels[1] != "_tcp" || !strings.HasPrefix(labels[0], "_") {
			return false
		}
		// A port that no endpoint has right now is NODATA, not
		// NXDOMAIN: the app exists and the port may come back with
		// the next task.
		tgs := app.byPort[strings.TrimPrefix(labels[0], "_")]
		if wants(q.Qtype, dns.TypeSRV) {
			s.addSRV(m, q.Name, appName, app, tgs)
		}
		return true
	}
	return false
}

// addAddrs appends the A and AAAA records of ips that q asks for,
// rotated so that successive queries lead with different IPs.
func (s *Server) addAddrs(m *dns.Msg, q dns.Question, ips []net.IP) {
	for _, ip := range rotate(s.next.Add(1), ips) {
		if rr := s.addr(q.Name, ip, q.Qtype); rr != nil {
			m.Answer = append(m.Answer, rr)
		}
	}
}

// addSRV appends one SRV record per target, rotated, and the address
// of each target task as an additional record.
func (s *Server) addSRV(m *dns.Msg, owner, appName string,
	app *appRecords, tgs []target) {

	seen := make(map[string]bool)
	for _, tg := range rotate(s.next.Add(1), tgs) {
		host := tg.task + "." + appName + "." + s.zone
		m.Answer = append(m.Answer, &dns.SRV{
			Hdr:      s.header(owner, dns.TypeSRV),
			Priority: srvPriority,
			Weight:   srvWeight,
			Port:     tg.port,
			Target:   host,
		})
		if !seen[tg.task] {
			seen[tg.task] = true
			m.Extra = append(m.Extra,
				s.addr(host, app.tasks[tg.task], dns.TypeANY))
		}
	}
}

// addr returns the A or AAAA record of ip if qtype asks for its
// family, else nil.
func (s *Server) addr(owner string, ip net.IP, qtype uint16) dns.RR {
	if v4 := ip.To4(); v4 != nil {
		if !wants(qtype, dns.TypeA) {
			return nil
		}
		return &dns.A{Hdr: s.header(owner, dns.TypeA), A: v4}
	}
	if !wants(qtype, dns.TypeAAAA) {
		return nil
	}
	return &dns.AAAA{Hdr: s.header(owner, dns.TypeAAAA), AAAA: ip}
}

func (s *Server) header(owner string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype,
		Class: dns.ClassINET, Ttl: s.cfg.TTL}
}

// soa is the zone's SOA record. Its minimum TTL is the record TTL, so
// negative answers are cached no longer than positive ones.
func (s *Server) soa(t *table) dns.RR {
	return &dns.SOA{
		Hdr:     s.header(s.zone, dns.TypeSOA),
		Ns:      "ns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  t.serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.cfg.TTL,
	}
}

// rotate returns a copy of xs that starts at offset next (mod its
// length), spreading the clients that take the first record.
func rotate[T any](next uint64, xs []T) []T {
	if len(xs) == 0 {
		return nil
	}
	i := int(next % uint64(len(xs)))
	out := make([]T, 0, len(xs))
	return append(append(out, xs[i:]...), xs[:i]...)
}

func wants(qtype, rrtype uint16) bool {
	return qtype == rrtype || qtype == dns.TypeANY
}

// fit makes m fit the size the client accepts: 512 bytes over UDP
// without EDNS(0), the advertised size with it, 64 KiB over TCP.
func fit(m, r *dns.Msg, tcp bool) {
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = min(int(opt.UDPSize()), udpSize)
		m.SetEdns0(udpSize, false)
	}
	if tcp {
		size = dns.MaxMsgSize
	}

	answers, ns := len(m.Answer), len(m.Ns)
	m.Truncate(size)
	m.Compress = true

	// Truncate also sets TC when it only dropped additional records;
	// those are optional (RFC 2181, 9), so the client need not retry.
	if m.Truncated && len(m.Answer) == answers && len(m.Ns) == ns {
		m.Truncated = false
	}
}
