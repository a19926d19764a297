package dns

import (
	"bytes"
	"net"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// Endpoint is a healthy, non-draining task of an app: the IP it is
// reached on and its named host ports.
type Endpoint struct {
	TaskID string
	IP     string
	Ports  map[string]int
}

// table is an immutable snapshot of every app's records. Update builds
// a new one and swaps it in, so a query never sees half an update.
type table struct {
	apps   map[string]*appRecords // by lower-case app name
	serial uint32                 // SOA serial: counts Updates
}

// appRecords is what one app answers with. Every name is lower case.
type appRecords struct {
	ips     []net.IP          // distinct, sorted
	tasks   map[string]net.IP // task ID -> IP
	targets []target          // every endpoint port, sorted
	byPort  map[string][]target
}

// target is one SRV record: a task's named host port.
type target struct {
	task string
	port uint16
}

// buildTable turns the caller's map into a table. Endpoints that
// cannot be put in DNS are skipped with a warning, so one bad entry
// does not take its app's other answers away.
func buildTable(apps map[string][]Endpoint, serial uint32,
	log hclog.Logger) *table {

	t := &table{apps: make(map[string]*appRecords, len(apps)),
		serial: serial}
	for name, eps := range apps {
		if !isLabel(name) {
			log.Warn("app name is not a DNS label, skipped",
				"app", name)
			continue
		}
		t.apps[strings.ToLower(name)] = buildApp(name, eps, log)
	}
	return t
}

func buildApp(app string, eps []Endpoint, log hclog.Logger) *appRecords {
	a := &appRecords{tasks: make(map[string]net.IP),
		byPort: make(map[string][]target)}
	seen := make(map[string]bool)

	for _, ep := range eps {
		ip := net.ParseIP(ep.IP)
		if ip == nil || !isLabel(ep.TaskID) {
			log.Warn("endpoint skipped: bad IP or task ID",
				"app", app, "task_id", ep.TaskID, "ip", ep.IP)
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		task := strings.ToLower(ep.TaskID)
		if _, dup := a.tasks[task]; dup {
			log.Warn("endpoint skipped: task listed twice",
				"app", app, "task_id", ep.TaskID)
			continue
		}
		a.tasks[task] = ip
		if !seen[ip.String()] {
			seen[ip.String()] = true
			a.ips = append(a.ips, ip)
		}

		for port, hostPort := range ep.Ports {
			if !isLabel("_"+port) || hostPort <= 0 || hostPort > 65535 {
				log.Warn("port skipped: bad name or number",
					"app", app, "task_id", ep.TaskID,
					"port", port, "host_port", hostPort)
				continue
			}
			tg := target{task: task, port: uint16(hostPort)}
			a.targets = append(a.targets, tg)
			p := strings.ToLower(port)
			a.byPort[p] = append(a.byPort[p], tg)
		}
	}

	// Sorted, so that answers do not depend on map order.
	sort.Slice(a.ips, func(i, j int) bool {
		return bytes.Compare(a.ips[i], a.ips[j]) < 0
	})
	sortTargets(a.targets)
	for _, tgs := range a.byPort {
		sortTargets(tgs)
	}
	return a
}

func sortTargets(tgs []target) {
	sort.Slice(tgs, func(i, j int) bool {
		if tgs[i].task != tgs[j].task {
			return tgs[i].task < tgs[j].task
		}
		return tgs[i].port < tgs[j].port
	})
}

// isLabel reports whether s is one valid DNS label.
func isLabel(s string) bool {
	if s == "" || len(s) > 63 || strings.Contains(s, ".") {
		return false
	}
	_, ok := dns.IsDomainName(s)
	return ok
}
