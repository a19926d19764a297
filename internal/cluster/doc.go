// Package cluster starts a whole Hivemind on one machine from the hivemind
// binary, for the integration tests, the demo and the benchmarks: managers
// and workers on loopback addresses, a private containerd per worker, and a
// local registry serving the test web image in four versions (v1 and v2
// healthy, v3 failing its health check, v4 crashing after 4s).
//
// Managers run on 127.0.S.1..N and workers on 127.0.S.11.., S being
// Config.Subnet, so clusters on different subnets run side by side:
//
//	c, err := cluster.Start(cluster.Config{Binary: bin, Workers: 2, Subnet: 10, Log: os.Stderr})
//	if err != nil { ... }            // the error carries the tail of every log
//	defer c.Stop()                   // processes, containers, mounts, run dir
//	c.Deploy(cluster.WebApp{Name: "web", Image: c.Image("v1"), Replicas: 3}.YAML())
//	err = cluster.WaitFor(time.Minute, func() error {
//		st, err := c.AppStatus("web")
//		if err != nil {
//			return err
//		}
//		return st.Settled(1)     // names what is not yet true
//	})
//
// It owns the processes it starts, their data directories and log files
// (one per process in the run directory; Tails prints their ends), and the
// containers its workers run: Stop removes all of them, and Leftovers
// checks that nothing is left. It talks to the cluster only the way a user
// does, through the CLI with -o json, and to containerd only to look. It
// never uses the machine's own containerd, and it takes no testing.T:
// progress goes to a log writer.
package cluster
