package rpc

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The metrics of GET /metrics: this manager's own view, as in its
// ManagerStatus, read afresh at each scrape.
var (
	engineEnabledDesc = prometheus.NewDesc("hivemind_engine_enabled",
		"1 while this manager's rollout engine runs (it leads and has applied the log), else 0.",
		nil, nil)
	engineStepsDesc = prometheus.NewDesc("hivemind_engine_steps_total",
		"Passes of this manager's rollout engine since the process started.",
		nil, nil)
	engineProposalsDesc = prometheus.NewDesc("hivemind_engine_proposals_total",
		"Commands this manager's rollout engine proposed since the process started, committed or not.",
		nil, nil)
	raftLeaderDesc = prometheus.NewDesc("hivemind_raft_leader",
		"1 while this manager is the Raft leader, else 0.", nil, nil)
	raftTermDesc = prometheus.NewDesc("hivemind_raft_term",
		"This manager's current Raft term.", nil, nil)
	raftAppliedDesc = prometheus.NewDesc("hivemind_raft_applied_index",
		"The last Raft index this manager has applied to its state.", nil, nil)
)

// statusCollector reports a Server's own status as Prometheus metrics,
// taking the status once per scrape.
type statusCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{engineEnabledDesc, engineStepsDesc,
		engineProposalsDesc, raftLeaderDesc, raftTermDesc, raftAppliedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.ownStatus()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(engineEnabledDesc, oneIf(st.GetEngineEnabled()))
	counter(engineStepsDesc, st.GetEngineSteps())
	counter(engineProposalsDesc, st.GetEngineProposals())
	gauge(raftLeaderDesc, oneIf(st.GetState() == stateLeader))
	gauge(raftTermDesc, float64(st.GetTerm()))
	gauge(raftAppliedDesc, float64(st.GetAppliedIndex()))
}

// stateLeader is the state of a leading manager in its ManagerStatus.
const stateLeader = "leader"

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves GET /metrics in the Prometheus text format:
// the metrics above and the Go runtime's and the process's own.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(statusCollector{s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
