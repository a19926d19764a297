package main

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsPort is the workers' DNS port: the cluster harness starts them
// without --dns-port, so they use the default.
const dnsPort = 7053

// dnsAnswer is what one worker's DNS answers for APP.hivemind: the A
// records and the SRV records as "taskID@ip:port".
type dnsAnswer struct {
	rcode string
	a     []string
	srv   []string
}

func (a dnsAnswer) String() string {
	return fmt.Sprintf("%s, A %s; SRV %s", a.rcode, orNone(a.a), orNone(a.srv))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, " ")
}

// lookup asks the DNS server at server (ip:port) for the A and SRV
// records of app.hivemind.
func lookup(server, app string) (dnsAnswer, error) {
	client := &dns.Client{Net: "udp", Timeout: time.Second}
	name := dns.Fqdn(app + ".hivemind")
	var out dnsAnswer
	for _, qtype := range []uint16{dns.TypeA, dns.TypeSRV} {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := client.Exchange(m, server)
		if err != nil {
			return out, fmt.Errorf("dns %s %s at %s: %w", dns.TypeToString[qtype], name, server, err)
		}
		out.rcode = dns.RcodeToString[r.Rcode]
		if r.Rcode != dns.RcodeSuccess {
			return out, nil
		}
		glue := map[string]string{}
		for _, rr := range r.Extra {
			if a, ok := rr.(*dns.A); ok {
				glue[a.Hdr.Name] = a.A.String()
			}
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				out.a = append(out.a, rr.A.String())
			case *dns.SRV:
				task, _, _ := strings.Cut(rr.Target, ".")
				out.srv = append(out.srv, fmt.Sprintf("%s@%s", task,
					net.JoinHostPort(glue[rr.Target], fmt.Sprint(rr.Port))))
			}
		}
	}
	sort.Strings(out.a)
	sort.Strings(out.srv)
	return out, nil
}
