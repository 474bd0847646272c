package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/relay/sink"
)

// metrics are the relay's Prometheus metrics. All names start with outbox_;
// event ids are never labels. A nil *metrics records nothing.
type metrics struct {
	read           prometheus.Counter
	delivered      *prometheus.CounterVec
	retriedC       *prometheus.CounterVec
	deadLetteredC  *prometheus.CounterVec
	dropped        prometheus.Counter
	filterErrors   *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	commitToAck    *prometheus.HistogramVec
	inflight       prometheus.Gauge
	lagBytes       prometheus.Gauge
	confirmedLSN   prometheus.Gauge
	active         prometheus.Gauge
	slotsRecreated prometheus.Counter
	backlog        prometheus.Gauge
	backlogAge     prometheus.Gauge
	slotLag        prometheus.Gauge
	lagLevel       prometheus.Gauge
	sinkUp         *prometheus.GaugeVec

	mu     sync.RWMutex
	routes map[*route]*routeMetrics // children resolved once per route
}

// routeMetrics are the metric children of one route and its sink.
type routeMetrics struct {
	delivered, retried prometheus.Counter
	commitToAck        prometheus.Observer
	durOK, durErr      prometheus.Observer
}

func (m *metrics) route(rt *route) *routeMetrics {
	m.mu.RLock()
	rm := m.routes[rt]
	m.mu.RUnlock()
	if rm != nil {
		return rm
	}
	rm = &routeMetrics{
		delivered:   m.delivered.WithLabelValues(rt.Name, rt.Sink),
		retried:     m.retriedC.WithLabelValues(rt.Name, rt.Sink),
		commitToAck: m.commitToAck.WithLabelValues(rt.Name, rt.Sink),
		durOK:       m.duration.WithLabelValues(rt.Sink, "ok"),
		durErr:      m.duration.WithLabelValues(rt.Sink, "error"),
	}
	m.mu.Lock()
	if m.routes == nil {
		m.routes = map[*route]*routeMetrics{}
	}
	m.routes[rt] = rm
	m.mu.Unlock()
	return rm
}

// newMetrics creates the relay's metrics and registers them with reg.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		read: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_events_read_total",
			Help: "Events read from the replication slot or a slot's snapshot."}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_events_delivered_total",
			Help: "Events acknowledged by a sink, by route and sink."}, []string{"route", "sink"}),
		retriedC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_events_retried_total",
			Help: "Failed delivery attempts that will be retried, by route and sink."}, []string{"route", "sink"}),
		deadLetteredC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_events_dead_lettered_total",
			Help: "Events written to the dead-letter table, by route, sink and reason (permanent or exhausted)."}, []string{"route", "sink", "reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_events_unrouted_total",
			Help: "Events no route took (no default route, or default_route: {drop: true}); their rows are marked like delivered ones."}),
		filterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_filter_errors_total",
			Help: "Route filter evaluations that failed (a missing field, a type mismatch); the route did not take the event. By route."}, []string{"route"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "outbox_delivery_duration_seconds",
			Help:    "Time a sink took to publish a batch and get the broker's acknowledgement, per message, by sink and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"sink", "result"}),
		commitToAck: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "outbox_commit_to_ack_seconds",
			Help:    "Time from the writing transaction's commit to the broker's acknowledgement, by route and sink.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"route", "sink"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_events_in_flight",
			Help: "Events read but not yet finished (delivered or dead-lettered on every route and marked)."}),
		lagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_replication_lag_bytes",
			Help: "Bytes of WAL between the server's current position and the slot's confirmed position."}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_slot_confirmed_lsn",
			Help: "The position last confirmed to PostgreSQL, as a number."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_active",
			Help: "1 when this relay holds the slot and delivers, 0 when it is a standby."}),
		slotsRecreated: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_slot_created_total",
			Help: "Replication slots created (first start, or after the slot was dropped or lost)."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_backlog_events",
			Help: "Rows of the events table not yet delivered (sampled)."}),
		backlogAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_backlog_oldest_age_seconds",
			Help: "Age of the oldest undelivered row (sampled)."}),
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_slot_lag_bytes",
			Help: "WAL retained by the slot: the server's current WAL position minus the slot's confirmed position (sampled)."}),
		lagLevel: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_slot_lag_level",
			Help: "0 below database.lag_warn_bytes, 1 above it, 2 above database.lag_page_bytes."}),
		sinkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_sink_up",
			Help: "1 when the sink's broker answered the relay's last check (every database.sample_interval, active relay only), else 0."}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(m.read, m.delivered, m.retriedC, m.deadLetteredC, m.dropped, m.filterErrors, m.duration, m.commitToAck,
			m.inflight, m.lagBytes, m.confirmedLSN, m.active, m.slotsRecreated, m.backlog, m.backlogAge, m.slotLag, m.lagLevel, m.sinkUp)
	}
	return m
}

func (m *metrics) observeDelivery(dl *delivery, dur time.Duration, now time.Time, err error) {
	if m == nil {
		return
	}
	rm := m.route(dl.route)
	if err != nil {
		rm.durErr.Observe(dur.Seconds())
		return
	}
	rm.durOK.Observe(dur.Seconds())
	rm.delivered.Inc()
	if ct := dl.msg.Event.CommitTime; !ct.IsZero() {
		rm.commitToAck.Observe(now.Sub(ct).Seconds())
	}
}

func (m *metrics) retried(dl *delivery) {
	if m != nil {
		m.route(dl.route).retried.Inc()
	}
}

func (m *metrics) deadLettered(dl *delivery) {
	if m == nil {
		return
	}
	reason := "exhausted"
	if sink.Permanent(dl.err) {
		reason = "permanent"
	}
	m.deadLetteredC.WithLabelValues(dl.route.Name, dl.route.Sink, reason).Inc()
}

func (m *metrics) eventRead() {
	if m != nil {
		m.read.Inc()
	}
}

func (m *metrics) eventDropped() {
	if m != nil {
		m.dropped.Inc()
	}
}

// filterRoute makes rt's filter error series exist (at 0) before its first error.
func (m *metrics) filterRoute(rt *route) {
	if m != nil {
		m.filterErrors.WithLabelValues(rt.Name)
	}
}

func (m *metrics) filterError(rt *route) {
	if m != nil {
		m.filterErrors.WithLabelValues(rt.Name).Inc()
	}
}

func (m *metrics) setInflight(n int) {
	if m != nil {
		m.inflight.Set(float64(n))
	}
}

func (m *metrics) setActive(active bool) {
	if m != nil {
		v := 0.0
		if active {
			v = 1
		}
		m.active.Set(v)
	}
}

func (m *metrics) setPosition(confirmed, server uint64) {
	if m == nil {
		return
	}
	m.confirmedLSN.Set(float64(confirmed))
	if server > confirmed {
		m.lagBytes.Set(float64(server - confirmed))
	} else {
		m.lagBytes.Set(0)
	}
}

func (m *metrics) slotCreated() {
	if m != nil {
		m.slotsRecreated.Inc()
	}
}

func (m *metrics) setBacklog(n int64, age time.Duration) {
	if m != nil {
		m.backlog.Set(float64(n))
		m.backlogAge.Set(age.Seconds())
	}
}

func (m *metrics) setSlotLag(bytes int64, level int) {
	if m != nil {
		m.slotLag.Set(float64(bytes))
		m.lagLevel.Set(float64(level))
	}
}

// sessionEnded clears the gauges only an active session keeps current, so a
// relay that stepped down (or lost its database) does not report a stale
// backlog or lag.
func (m *metrics) sessionEnded() {
	if m == nil {
		return
	}
	m.active.Set(0)
	m.inflight.Set(0)
	m.lagBytes.Set(0)
	m.slotLag.Set(0)
	m.lagLevel.Set(0)
	m.backlog.Set(0)
	m.backlogAge.Set(0)
}

func (m *metrics) setSinkUp(sink string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.sinkUp.WithLabelValues(sink).Set(v)
}
