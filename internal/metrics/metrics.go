// Package metrics exposes latchkey's Prometheus metrics (GET /metrics).
// Everything is read from the components' own counters at scrape time, or
// counted on the audit writer goroutine from committed records, so the
// verification hot path pays nothing for it. No label ever carries a
// token, a token id or a secret: labels are outcome codes, rule names and
// delivery results.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/internal/buildinfo"
	"github.com/latchkeyhq/latchkey/verify"
)

// Sources are the components whose counters are exported. Any may be nil.
type Sources struct {
	Pipeline *audit.Pipeline
	Verifier *verify.Verifier
	Detector *detect.Detector
	// Webhooks returns delivery counters by result ("delivered", "failed",
	// "retried").
	Webhooks func() map[string]uint64
	// Cluster returns the change follower's state (PostgreSQL); nil on a
	// single node, and then no cluster metric is exported.
	Cluster func() ClusterStats
	// Redis returns the shared counters' state; nil without Redis.
	Redis func() RedisStats
}

// RedisStats is the state of the shared counters (rate limits, detector
// windows).
type RedisStats struct {
	Up       bool   // no failed call in the last second
	Failures uint64 // calls that failed: each was counted by the node alone (or refused, fail-closed)
	Resets   uint64 // times Redis was found to have lost its data (every bucket and window started again)
}

// ClusterStats is how a node keeps up with changes made on other nodes.
type ClusterStats struct {
	Listening  bool   // the notification connection is up
	Notified   uint64 // changes received by notification
	Polled     uint64 // changes found by polling the change log
	Reconnects uint64 // times the notification connection was replaced
}

// Metrics holds the registry and the collectors fed from audit batches.
type Metrics struct {
	reg       *prometheus.Registry
	verifs    *prometheus.CounterVec
	latency   prometheus.Histogram
	commit    prometheus.Histogram
	detectEvs *prometheus.CounterVec
	doorReqs  *prometheus.CounterVec
	doorTime  *prometheus.HistogramVec
	upstream  *prometheus.CounterVec
}

// New registers every metric. src is read at scrape time, so its fields
// may be filled in after New returns (components are wired in an order
// that needs the metrics first); nil ones read as zero.
func New(src *Sources) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{reg: reg,
		verifs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "latchkey_verifications_total",
			Help: "Verification attempts by outcome code (VALID, MALFORMED, NOT_FOUND, ...)."}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latchkey_verify_duration_seconds",
			Help:    "Time one verification waited on the store, Redis or a usage budget, in process (HTTP not included); 0 for a decision made from memory, which reads the clock once.",
			Buckets: []float64{250e-9, 500e-9, 1e-6, 2.5e-6, 5e-6, 10e-6, 50e-6, 100e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3}}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latchkey_audit_batch_commit_seconds",
			Help: "Time to commit one batch of audit records.", Buckets: prometheus.ExponentialBuckets(100e-6, 2.5, 12)}),
		detectEvs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "latchkey_detector_actions_total",
			Help: "Detector actions and alerts carried out, by rule (source_failures, network_spread, ...)."}, []string{"rule"}),
	}
	for c := range latchkey.Valid + 1 {
		m.verifs.WithLabelValues(c.String()) // every code present from the start, at 0
	}
	m.doorReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "latchkey_door_requests_total",
		Help: "Requests through the HTTP doors (gateway, forward_auth, mcp) by route and status. Route names come from the route file; a request that matched none has route=\"\"."},
		[]string{"door", "route", "status"})
	m.doorTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "latchkey_door_request_duration_seconds",
		Help:    "Time to answer a request through an HTTP door, upstream included, by route.",
		Buckets: []float64{100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10, 30}},
		[]string{"door", "route"})
	m.upstream = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "latchkey_gateway_upstream_errors_total",
		Help: "Allowed requests whose upstream failed or timed out (answered 502 or 504), by route."}, []string{"route"})
	in := buildinfo.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "latchkey_build_info",
		Help: "Always 1; the labels say which build is running."}, []string{"version", "revision", "goversion"})
	build.WithLabelValues(in.Version, in.Short(), in.GoVersion).Set(1)
	reg.MustRegister(m.verifs, m.latency, m.commit, m.detectEvs, m.doorReqs, m.doorTime, m.upstream, build)
	pst := func() audit.Stats {
		if src.Pipeline == nil {
			return audit.Stats{}
		}
		return src.Pipeline.Stats()
	}
	vst := func() verify.Stats {
		if src.Verifier == nil {
			return verify.Stats{}
		}
		return src.Verifier.Stats()
	}
	dst := func() detect.Stats {
		if src.Detector == nil {
			return detect.Stats{}
		}
		return src.Detector.Stats()
	}
	{
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "latchkey_audit_queue_depth", Help: "Audit records waiting to be committed."},
				func() float64 { st := pst(); return float64(st.Enqueued - st.Written - st.Lost) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_audit_records_written_total", Help: "Audit records committed."},
				func() float64 { return float64(pst().Written) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_audit_backpressure_total",
				Help: "Times a verification waited because the audit queue was full (records are never dropped)."},
				func() float64 { return float64(pst().Stalls) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_audit_write_retries_total", Help: "Failed batch commits that were retried."},
				func() float64 { return float64(pst().Retries) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_audit_records_lost_total",
				Help: "Records abandoned because the store kept failing at shutdown (logged)."},
				func() float64 { return float64(pst().Lost) }),
		)
	}
	{
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_cache_lookups_total", Help: "Token lookups by the verifier."},
				func() float64 { return float64(vst().Lookups) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_cache_misses_total", Help: "Lookups the cache could not answer (store reads)."},
				func() float64 { return float64(vst().Misses) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "latchkey_cache_hit_ratio", Help: "1 - misses/lookups since start."},
				func() float64 {
					st := vst()
					if st.Lookups == 0 {
						return 1
					}
					return 1 - float64(st.Misses)/float64(st.Lookups)
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "latchkey_cache_entries", Help: "Entries in the verifier's cache."},
				func() float64 { return float64(vst().Cached) }),
		)
	}
	{
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "latchkey_blocked_sources", Help: "Sources blocked now (this node)."},
				func() float64 {
					if src.Detector == nil {
						return 0
					}
					return float64(len(src.Detector.Blocks(time.Now())))
				}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_detector_findings_total", Help: "Rules that fired."},
				func() float64 { return float64(dst().Findings) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_detector_failures_total", Help: "Findings the detector could not act on (logged)."},
				func() float64 { return float64(dst().Failed) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "latchkey_detector_overflow_total", Help: "Events not counted because the detector's tables were full."},
				func() float64 { return float64(dst().Overflow) }),
		)
	}
	reg.MustRegister(clusterAndRedis(src))
	reg.MustRegister(webhookCollector{func() map[string]uint64 {
		if src.Webhooks == nil {
			return nil
		}
		return src.Webhooks()
	}})
	return m
}

// ObserveEvents counts committed audit records (the pipeline's Observe
// hook, on the writer goroutine).
func (m *Metrics) ObserveEvents(evs []latchkey.AuditEvent) {
	for i := range evs {
		ev := &evs[i]
		if ev.Kind == latchkey.KindVerify {
			if ev.Outcome != "ERROR" {
				m.verifs.WithLabelValues(ev.Outcome).Inc()
			}
			m.latency.Observe(ev.Latency.Seconds())
		}
	}
}

// ObserveCommit records one batch commit (the pipeline's OnCommit hook).
func (m *Metrics) ObserveCommit(_ int, took time.Duration) { m.commit.Observe(took.Seconds()) }

// Responder wraps a detector responder to count what it carries out.
func (m *Metrics) Responder(r detect.Responder) detect.Responder { return countingResponder{r, m} }

type countingResponder struct {
	detect.Responder
	m *Metrics
}

func (c countingResponder) Respond(ctx context.Context, f detect.Finding) error {
	err := c.Responder.Respond(ctx, f)
	if err == nil {
		c.m.detectEvs.WithLabelValues(f.Rule).Inc()
	}
	return err
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

var webhookDesc = prometheus.NewDesc("latchkey_webhook_deliveries_total", "Webhook delivery attempts by result.", []string{"result"}, nil)

type webhookCollector struct{ f func() map[string]uint64 }

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- webhookDesc }

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	for result, n := range c.f() {
		ch <- prometheus.MustNewConstMetric(webhookDesc, prometheus.CounterValue, float64(n), result)
	}
}

var (
	listeningDesc = prometheus.NewDesc("latchkey_cluster_listening",
		"1 while this node's change-notification connection (PostgreSQL LISTEN) is up; 0 means it relies on polling.", nil, nil)
	changesDesc = prometheus.NewDesc("latchkey_cluster_changes_total",
		"Changes made on any node and applied here, by how they arrived (notify, poll).", []string{"via"}, nil)
	reconnectsDesc = prometheus.NewDesc("latchkey_cluster_listener_reconnects_total",
		"Times the change-notification connection was lost and replaced.", nil, nil)
)

var (
	redisUpDesc = prometheus.NewDesc("latchkey_redis_up",
		"1 while the shared counters (Redis) answer; 0 means rate limits and detector windows are counted per node (or refused, fail-closed).", nil, nil)
	redisFailDesc = prometheus.NewDesc("latchkey_redis_failures_total",
		"Calls to the shared counters (Redis) that failed.", nil, nil)
	redisResetDesc = prometheus.NewDesc("latchkey_redis_resets_total",
		"Times this node found that Redis had lost its data (restarted without persistence, failed over to a replica behind, flushed): rate limits and detector windows started again from zero.", nil, nil)
)

// optionalCollector exports descs from collect, which emits nothing when
// the component is not configured (a single node has no cluster metrics).
type optionalCollector struct {
	descs   []*prometheus.Desc
	collect func(emit func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string))
}

func (c optionalCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c optionalCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	})
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// clusterAndRedis exports the change follower's and the shared counters'
// state, each only when configured.
func clusterAndRedis(src *Sources) prometheus.Collector {
	return optionalCollector{
		descs: []*prometheus.Desc{listeningDesc, changesDesc, reconnectsDesc, redisUpDesc, redisFailDesc, redisResetDesc},
		collect: func(emit func(*prometheus.Desc, prometheus.ValueType, float64, ...string)) {
			if src.Cluster != nil {
				st := src.Cluster()
				emit(listeningDesc, prometheus.GaugeValue, bool01(st.Listening))
				emit(changesDesc, prometheus.CounterValue, float64(st.Notified), "notify")
				emit(changesDesc, prometheus.CounterValue, float64(st.Polled), "poll")
				emit(reconnectsDesc, prometheus.CounterValue, float64(st.Reconnects))
			}
			if src.Redis != nil {
				st := src.Redis()
				emit(redisUpDesc, prometheus.GaugeValue, bool01(st.Up))
				emit(redisFailDesc, prometheus.CounterValue, float64(st.Failures))
				emit(redisResetDesc, prometheus.CounterValue, float64(st.Resets))
			}
		},
	}
}

// ObserveDoor counts one request through an HTTP door (edge.Recorder's
// Observe). Labels are the door, the route name and the status: never a
// path, a token id or anything else a client chooses.
func (m *Metrics) ObserveDoor(a *edge.Access, status int, latency time.Duration) {
	m.doorReqs.WithLabelValues(a.Door, a.Route, strconv.Itoa(status)).Inc()
	m.doorTime.WithLabelValues(a.Door, a.Route).Observe(latency.Seconds())
	if a.Outcome == edge.OutcomeUpstreamFailed {
		m.upstream.WithLabelValues(a.Route).Inc()
	}
}
