// Package dns is the service-discovery DNS server a worker runs on its
// DNS port (default 7053, UDP and TCP, on the worker's bind address).
//
// It owns one thing: a table of apps and their healthy, non-draining
// endpoints, and the answers derived from it under one domain
// (default "hivemind"):
//
//	APP.hivemind.                A/AAAA  one per distinct endpoint IP
//	APP.hivemind.                SRV     one per endpoint per named port
//	_PORT._tcp.APP.hivemind.     SRV     one per endpoint with that port
//	TASKID.APP.hivemind.         A/AAAA  the task's IP (the SRV targets)
//
// SRV answers carry the targets' addresses as additional records. An
// unknown app is NXDOMAIN, a known app with no endpoint is NOERROR with
// no answer (NODATA), and a name outside the domain is REFUSED.
//
// The package never decides which tasks are healthy or draining, never
// talks to a manager and never recurses or forwards: its caller computes
// the endpoint set and hands it over with Server.Update. Until the next
// Update the server keeps answering from the last table, whatever
// happens to the caller or the cluster (static stability).
package dns
