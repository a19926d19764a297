package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hivemind-orch/hivemind/agent/dns"
	"github.com/hivemind-orch/hivemind/agent/ingress"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// errEndpointsEnded means a manager closed the endpoints stream.
var errEndpointsEnded = errors.New("endpoints stream ended")

// traffic is what the worker serves from the cluster's endpoint set:
// the ingress proxy and the DNS server. The endpoints watcher is the
// only one that updates them.
type traffic struct {
	proxy *ingress.Proxy
	dns   *dns.Server
	rep   *reporter
	log   hclog.Logger

	served position // the position of the set served, zero before the first
}

// watchEndpoints follows the endpoint set, moving to the next manager
// whenever a stream breaks, and serves every set it receives. While no
// manager answers, the proxy and the DNS server keep the last set: a
// cluster without a leader still routes traffic to its tasks.
func (a *Agent) watchEndpoints(ctx context.Context, tr *traffic) {
	bo := backoff{min: 50 * time.Millisecond, max: time.Second}
	unknown := refusals{started: time.Now()}
	for {
		addr := a.mgrs.order()[0]
		err := a.endpointsAt(ctx, addr, tr, &bo, unknown.served)
		if ctx.Err() != nil {
			return
		}
		unknown.log(a, "endpoints stream lost, serving the last set",
			addr, err, "index", tr.served.index)
		a.mgrs.failed(addr)
		if !sleepCtx(ctx, bo.next()) {
			return
		}
	}
}

// endpointsAt reads one manager's endpoints stream until it breaks,
// calling received for every set.
func (a *Agent) endpointsAt(ctx context.Context, addr string,
	tr *traffic, bo *backoff, received func()) error {
	c, err := a.mgrs.client(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := c.Endpoints(ctx, &pb.EndpointsRequest{
		Node: a.cfg.Name,
	})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errEndpointsEnded
			}
			return err
		}
		bo.reset()
		received()
		tr.serve(resp)
	}
}

// serve applies one endpoint set to the proxy, then to DNS, and then
// has the reporter tell the managers its index: the leader lets a
// draining task stop only once every worker serves a set without it.
//
// A set older than the one served comes from a manager whose replica
// lags behind; it could put back a task already taken out of rotation,
// so it is ignored, as is the empty set of a replica that has applied
// nothing.
func (tr *traffic) serve(resp *pb.EndpointsResponse) {
	index := resp.GetIndex()
	pos := position{epoch: resp.GetRestoreEpoch(), index: index}
	if index == 0 || pos.before(tr.served) {
		tr.log.Debug("ignoring stale endpoint set", "index", index,
			"restore_epoch", pos.epoch, "served", tr.served.index,
			"served_restore_epoch", tr.served.epoch)
		return
	}

	routes, table := endpointSet(resp.GetServices())
	if err := tr.proxy.Update(routes); err != nil {
		// The other routes apply; a port that could not be opened is
		// tried again with the next set.
		tr.log.Warn("ingress routes not all applied", "index", index,
			"error", err)
	}
	tr.dns.Update(table)

	if tr.served.index == 0 {
		tr.log.Info("serving endpoints", "index", index,
			"apps", len(table), "routes", len(routes))
	} else {
		tr.log.Debug("endpoint set changed", "index", index,
			"apps", len(table), "routes", len(routes))
	}
	tr.served = pos
	tr.rep.setServed(index)
}

// close stops the proxy and the DNS server.
func (tr *traffic) close() {
	if err := tr.proxy.Close(); err != nil {
		tr.log.Warn("closing the ingress proxy", "error", err)
	}
	if err := tr.dns.Close(); err != nil {
		tr.log.Warn("closing the dns server", "error", err)
	}
}

// endpointSet turns the endpoint set into ingress routes, one per app
// port with an ingress port, sorted by that port, and the DNS table.
// An endpoint without an address or without a host port for a route's
// port is left out of that route.
func endpointSet(svcs []*pb.ServiceEndpoints) ([]ingress.Route,
	map[string][]dns.Endpoint) {
	var routes []ingress.Route
	table := make(map[string][]dns.Endpoint, len(svcs))
	for _, svc := range svcs {
		eps := make([]dns.Endpoint, 0, len(svc.GetEndpoints()))
		for _, ep := range svc.GetEndpoints() {
			ports := make(map[string]int, len(ep.GetPorts()))
			for name, p := range ep.GetPorts() {
				ports[name] = int(p)
			}
			eps = append(eps, dns.Endpoint{TaskID: ep.GetTaskId(),
				IP: ep.GetAddress(), Ports: ports})
		}
		table[svc.GetApp()] = eps

		for _, port := range svc.GetPorts() {
			if port.GetIngress() > 0 {
				routes = append(routes, route(svc, port))
			}
		}
	}
	sort.Slice(routes, func(i, j int) bool {
		return routes[i].Listen < routes[j].Listen
	})
	return routes, table
}

// route is the ingress route of one port of svc.
func route(svc *pb.ServiceEndpoints, port *pb.Port) ingress.Route {
	r := ingress.Route{
		App:      svc.GetApp(),
		Port:     port.GetName(),
		Protocol: port.GetProtocol(),
		Listen:   int(port.GetIngress()),
	}
	if r.Protocol == "" {
		// Per connection works for any protocol.
		r.Protocol = ingress.ProtocolTCP
	}
	for _, ep := range svc.GetEndpoints() {
		hp, ok := ep.GetPorts()[port.GetName()]
		if !ok || hp <= 0 || ep.GetAddress() == "" {
			continue
		}
		r.Backends = append(r.Backends, ingress.Backend{
			TaskID: ep.GetTaskId(),
			Addr: net.JoinHostPort(ep.GetAddress(),
				strconv.Itoa(int(hp))),
		})
	}
	return r
}
