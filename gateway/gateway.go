package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// Gateway is the reverse proxy. Create it with New; swap its routes with
// Reload (SIGHUP) at any time: requests in flight finish on the routes
// they started with.
type Gateway struct {
	Auth   *Authorizer
	Logger *slog.Logger
	// Tracer, when set, wraps each upstream call in a client span and
	// passes its W3C trace context (traceparent) to the upstream.
	Tracer trace.Tracer

	state atomic.Pointer[state]
}

// state is one generation of compiled routes with their proxies.
type state struct {
	table     *Table
	proxies   map[*Route]*httputil.ReverseProxy
	transport *http.Transport
}

// New returns a gateway serving table.
func New(auth *Authorizer, table *Table, logger *slog.Logger) *Gateway {
	if logger == nil {
		logger = slog.Default()
	}
	g := &Gateway{Auth: auth, Logger: logger}
	g.Reload(table)
	return g
}

// Table returns the routes in force.
func (g *Gateway) Table() *Table { return g.state.Load().table }

// Reload puts table in force. The previous generation's idle upstream
// connections are closed at once; those still carrying a request on the
// old routes finish it, and then close after the old transport's idle
// timeout (never unbounded: compile gives every table one). No goroutine
// outlives the call.
func (g *Gateway) Reload(table *Table) {
	st := &state{table: table, proxies: map[*Route]*httputil.ReverseProxy{}, transport: table.transport()}
	for _, r := range table.Routes {
		st.proxies[r] = g.proxy(st, r)
	}
	if old := g.state.Swap(st); old != nil {
		old.transport.CloseIdleConnections()
	}
}

type ctxKey struct{}

// allowed is what ServeHTTP hands the proxy's Rewrite: one context value.
type allowed struct {
	match    Match
	decision latchkey.Decision
	path     string // the canonical path that was authorised
}

func (g *Gateway) proxy(st *state, r *Route) *httputil.ReverseProxy {
	up := r.Upstream
	return &httputil.ReverseProxy{
		Transport:  st.transport,
		BufferPool: copyBuffers, // else every request allocates a 32 KiB copy buffer
		Rewrite: func(pr *httputil.ProxyRequest) {
			a := pr.In.Context().Value(ctxKey{}).(*allowed)
			m, d := &a.match, &a.decision
			pr.SetURL(up)
			// Exactly the path that was authorised, escaped afresh.
			path := m.upstreamPath(a.path)
			pr.Out.URL.Path = singleJoin(up.Path, path)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = pr.In.Host // the upstream sees the name the client used
			h := pr.Out.Header
			h.Del("Authorization")
			g.Auth.Identify(h, *d, r.Name, st.table.TokenHeader)
			g.forwarded(pr)
			if g.Tracer != nil {
				h.Del("Traceparent")
				h.Del("Tracestate")
				otel.GetTextMapPropagator().Inject(pr.Out.Context(), propagation.HeaderCarrier(h))
			}
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			status := http.StatusBadGateway
			if errors.Is(err, context.DeadlineExceeded) {
				status = http.StatusGatewayTimeout
			}
			if !errors.Is(err, context.Canceled) {
				// The error quotes the upstream URL, which carries the
				// client's path: it could hold a token pasted by mistake.
				g.Logger.Warn("gateway: upstream failed", "route", r.Name, "err", secret.Redact(err.Error()))
			}
			edge.AccessOf(req.Context()).Refused(edge.OutcomeUpstreamFailed)
			trace.SpanFromContext(req.Context()).SetStatus(codes.Error, "upstream failed") // a no-op span when not tracing
			edge.Refuse(w, status, `{"error":"upstream_unavailable"}`)
		},
	}
}

// BufferPool is the gateway's pool of copy buffers, for a baseline proxy
// that should match it.
func BufferPool() httputil.BufferPool { return copyBuffers }

// copyBuffers recycles the buffers responses are copied through.
var copyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

func singleJoin(base, path string) string {
	if base == "" || base == "/" {
		return path
	}
	return strings.TrimSuffix(base, "/") + path
}

// forwarded sets X-Forwarded-For according to the trusted proxies: a
// trusted peer's chain is kept and extended, anyone else's is dropped.
// X-Forwarded-Host and -Proto say what the client asked for.
func (g *Gateway) forwarded(pr *httputil.ProxyRequest) {
	peer := edge.PeerAddr(pr.In)
	chain := ""
	if peer.IsValid() && g.Auth.TrustedProxies.Trusts(peer) {
		chain = strings.Join(pr.In.Header.Values("X-Forwarded-For"), ", ")
	}
	if peer.IsValid() {
		if chain != "" {
			chain += ", "
		}
		chain += peer.String()
	}
	if chain != "" {
		pr.Out.Header.Set("X-Forwarded-For", chain)
	}
	pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	pr.Out.Header.Set("X-Forwarded-Proto", proto)
}

// ServeHTTP checks the request at the edge (canonical path and host, no
// method override, no credential in the URL), then its token against its
// route, and forwards it. Every refusal is on record.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := g.state.Load()
	if r.URL.Path == "/.well-known/jwks.json" && r.Method == http.MethodGet && g.Auth.Signer != nil {
		ServeJWKS(w, g.Auth.Signer)
		return
	}
	ca := edge.ClientAddr(r, g.Auth.TrustedProxies)
	vr := latchkey.VerifyRequest{ClientIP: ca.IP, Source: ca.Source, Method: r.Method, Path: r.URL.Path, UserAgent: r.UserAgent(),
		RequestID: edge.PlainRequestID(r.Header), Action: "gateway"}
	acc := edge.AccessOf(r.Context())
	acc.At("", ca.IP)
	tg, reason, answer := edge.CheckTarget(r.URL.EscapedPath(), r.Host, r.Header, r.URL.RawQuery)
	if tg.Path != "" {
		vr.Path = tg.Path
	}
	if reason != "" {
		g.Auth.Refuse(r.Context(), w, &vr, reason, http.StatusBadRequest, answer)
		return
	}
	path := tg.Path
	m, ok := st.table.Lookup(tg.Host, r.Method, path)
	if !ok {
		g.Auth.Refuse(r.Context(), w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
		return
	}
	scopes, ok := m.Scopes()
	if !ok { // a parameter that is not a plain segment: no such resource
		g.Auth.Refuse(r.Context(), w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
		return
	}
	vr.Scopes = scopes
	rt := m.Route
	acc.At(rt.Name, "")
	vr.Resource, vr.Keyspace = rt.Resource, rt.Keyspace
	if rt.MaxHeaderBytes > 0 && int64(edge.HeaderBytes(r.Header)) > rt.MaxHeaderBytes {
		g.Auth.Refuse(r.Context(), w, &vr, edge.ReasonHeaderTooLarge, http.StatusRequestHeaderFieldsTooLarge, edge.AnswerHeaderTooLarge)
		return
	}
	token, present := edge.Credential(r, st.table.TokenHeader)
	if !present {
		g.Auth.refused(r.Context(), &vr, edge.ReasonNoCredential)
		edge.Challenge(w)
		return
	}
	vr.Token = token
	d, err := g.Auth.Check(r.Context(), &vr)
	if err != nil || !d.Valid() {
		edge.Deny(w, d, err)
		return
	}
	if rt.MaxBodyBytes > 0 {
		if r.ContentLength > rt.MaxBodyBytes {
			edge.Refuse(w, http.StatusRequestEntityTooLarge, `{"error":"request_too_large"}`)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, rt.MaxBodyBytes)
	}
	if r.Body != nil && r.Body != http.NoBody && r.Header.Get("Upgrade") == "" {
		// The listener has no read timeout (streams pass through); the
		// body has its route's. An upgrade has no body, and its
		// connection must not inherit a deadline.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(rt.BodyTimeout))
	}
	ctx := context.WithValue(r.Context(), ctxKey{}, &allowed{match: m, decision: d, path: path})
	if rt.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.Timeout)
		defer cancel()
	}
	if g.Tracer != nil {
		var span trace.Span
		ctx, span = g.Tracer.Start(ctx, "gateway.upstream "+rt.Name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("latchkey.route", rt.Name), attribute.String("server.address", rt.Upstream.Host)))
		defer span.End()
	}
	st.proxies[rt].ServeHTTP(w, r.WithContext(ctx))
}

// ServeJWKS answers GET /.well-known/jwks.json.
func ServeJWKS(w http.ResponseWriter, s interface {
	JWKSJSON(time.Time) []byte
}) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(s.JWKSJSON(time.Now()))
}

// SetTransport replaces the upstream transport of the routes in force
// (for tests and benchmarks that stub the network out).
func SetTransport(g *Gateway, rt http.RoundTripper) {
	for _, p := range g.state.Load().proxies {
		p.Transport = rt
	}
}
