package edge

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkeyhq/latchkey"
)

// Access is one request's line in the access log, filled in by the door
// as it decides (route, token id, outcome). It never holds a secret: the
// token id is public, the outcome is a code or an edge reason.
type Access struct {
	Door    string // gateway, forward_auth, mcp
	Route   string // the route (or MCP server) the request matched
	TokenID string
	Source  string // the client's address (IP) as the door worked it out
	Outcome string // VALID, NOT_FOUND, ..., or the edge reason of a refusal
}

type accessKey struct{}

// AccessOf is the request's access record, or nil when the access log is
// off; every method of a nil *Access does nothing.
func AccessOf(ctx context.Context) *Access {
	a, _ := ctx.Value(accessKey{}).(*Access)
	return a
}

// Refused notes an edge refusal.
func (a *Access) Refused(reason string) {
	if a != nil {
		a.Outcome = reason
	}
}

// Decided notes a verification's decision.
func (a *Access) Decided(d *latchkey.Decision) {
	if a != nil {
		a.TokenID, a.Outcome = d.TokenID, d.Code.String()
	}
}

// OutcomeUpstreamFailed is the outcome of an allowed request whose
// upstream failed or timed out.
const OutcomeUpstreamFailed = "upstream_failed"

// At notes the route and the client's address.
func (a *Access) At(route, source string) {
	if a != nil {
		if route != "" {
			a.Route = route
		}
		if source != "" {
			a.Source = source
		}
	}
}

// StatusWriter records the status a handler answered with (0 until it
// answers) and the body bytes it wrote.
type StatusWriter struct {
	http.ResponseWriter
	Status int
	Bytes  int64
}

func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.Bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController (flushes, upgrades) reach the
// connection.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessWriter is a StatusWriter with the request's access record, in one
// allocation.
type accessWriter struct {
	StatusWriter
	acc Access
}

// Recorder logs and measures the requests through a door. Either field
// may be nil.
type Recorder struct {
	// Logger gets one line at info per request (see Wrap); a logger that
	// does not log info costs nothing.
	Logger *slog.Logger
	// Observe is called once per request with its record, status and
	// latency (per-route metrics).
	Observe func(a *Access, status int, latency time.Duration)
	// Tracer, when set, gives each request a server span ("<door>
	// <route>"), child of the W3C trace context the request carries.
	Tracer trace.Tracer
}

// Wrap logs and measures each request through next: door, method, route,
// status, latency, token id, source, outcome and request id. The path and
// query are left out (a token pasted into a URL must not reach the log);
// the route names what was asked for.
func (rec *Recorder) Wrap(door string, next http.Handler) http.Handler {
	if rec == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logging := rec.Logger != nil && rec.Logger.Enabled(r.Context(), slog.LevelInfo)
		if !logging && rec.Observe == nil && rec.Tracer == nil {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		aw := &accessWriter{StatusWriter: StatusWriter{ResponseWriter: w}, acc: Access{Door: door}}
		ctx := context.WithValue(r.Context(), accessKey{}, &aw.acc)
		var span trace.Span
		if rec.Tracer != nil {
			ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(r.Header))
			ctx, span = rec.Tracer.Start(ctx, door, trace.WithSpanKind(trace.SpanKindServer))
		}
		next.ServeHTTP(aw, r.WithContext(ctx))
		a := &aw.acc
		status, latency := aw.Status, time.Since(start)
		if status == 0 {
			status = http.StatusOK
		}
		if span != nil {
			if a.Route != "" {
				span.SetName(door + " " + a.Route)
			}
			span.SetAttributes(attribute.String("http.request.method", Clip(r.Method, 16)), attribute.String("http.route", a.Route),
				attribute.Int("http.response.status_code", status), attribute.String("latchkey.token_id", a.TokenID),
				attribute.String("latchkey.outcome", a.Outcome), attribute.String("client.address", a.Source))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			span.End()
		}
		if rec.Observe != nil {
			rec.Observe(a, status, latency)
		}
		if logging {
			// The record is handed to the handler directly: Logger.LogAttrs
			// would also walk the stack for the caller's address, which no
			// access line shows.
			line := slog.NewRecord(start.Add(latency), slog.LevelInfo, "access", 0)
			line.AddAttrs(slog.String("door", a.Door), slog.String("method", Clip(r.Method, 16)), slog.String("route", a.Route),
				slog.Int("status", status), slog.Duration("latency", latency), slog.Int64("bytes", aw.Bytes),
				slog.String("token_id", a.TokenID), slog.String("source", a.Source), slog.String("outcome", a.Outcome),
				slog.String("request_id", PlainRequestID(r.Header)))
			rec.Logger.Handler().Handle(r.Context(), line)
		}
	})
}
