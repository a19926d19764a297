// Package ingress is the proxy a worker runs for the ingress ports of the
// cluster: for every route it listens on the worker's bind address at the
// route's ingress port and balances over the route's backends, the app's
// healthy, non-draining tasks.
//
// A route of protocol "http" is proxied per request: a client that keeps its
// connection to the proxy alive is still balanced request by request, and a
// request that cannot reach a task is retried on another task when that is
// safe. Any other route is proxied per TCP connection.
//
// The package owns its listeners, the connections it proxies and the count
// of open connections per task that connection draining reads. It never
// decides which tasks are in rotation (its caller hands it whole route sets
// through Update), never talks to the managers and never stops serving on
// its own: it keeps its last routes, whatever happens to its caller, until
// the next Update or Close.
//
// Update is the only writer of the route set. A pick of a backend and the
// count of that task's open connections are taken under the same lock as
// the swap of the set, so when Update returns every connection or request
// still bound for a removed task is already visible in ActiveConns.
package ingress
