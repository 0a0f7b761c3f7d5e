// Package webhook posts latchkey's events (token.created, token.revoked,
// source.blocked, leak.reported, ...) to configured URLs.
//
// Events are read from the audit log, in order, so nothing is sent that
// is not on record and nothing on record is skipped: each endpoint has a
// cursor kept in the store, and delivery is at least once, across
// restarts. Each request is signed: the header
//
//	X-Latchkey-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// lets a receiver check the sender and reject replays (Verify does both).
// With Config.Signature "standard" (or "both") requests are signed as
// Standard Webhooks (https://www.standardwebhooks.com) specify instead (or
// as well): webhook-id, webhook-timestamp and
// webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>,
// so receivers can use that project's verifiers in most languages. The key
// is the secret itself, or, for a secret written whsec_<base64> as those
// libraries expect, the bytes it encodes.
// A failed delivery is retried with exponential backoff; after MaxAttempts
// the event is given up on, logged and counted, and the next one follows.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
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
)

// SignatureHeader carries the signature; EventHeader the event type;
// DeliveryHeader the event id (the audit record's seq), stable across
// retries so a receiver can drop duplicates.
const (
	SignatureHeader = "X-Latchkey-Signature"
	EventHeader     = "X-Latchkey-Event"
	DeliveryHeader  = "X-Latchkey-Delivery"

	// The Standard Webhooks headers.
	StandardIDHeader        = "Webhook-Id"
	StandardTimestampHeader = "Webhook-Timestamp"
	StandardSignatureHeader = "Webhook-Signature"
)

// Signature schemes (Config.Signature).
const (
	SignLatchkey = "latchkey" // X-Latchkey-Signature (the default)
	SignStandard = "standard" // Standard Webhooks' three headers
	SignBoth     = "both"     // both, while receivers move from one to the other
)

// EventTypes maps audit actions to the event types sent. Verification
// attempts are never sent: they are too many, and the audit stream is for
// them.
var EventTypes = map[string]string{
	latchkey.ActionTokenCreate:     "token.created",
	latchkey.ActionTokenRevoke:     "token.revoked",
	latchkey.ActionTokenSuspend:    "token.suspended",
	latchkey.ActionTokenResume:     "token.resumed",
	latchkey.ActionTokenRotate:     "token.rotated",
	latchkey.ActionTokenDerive:     "token.derived",
	latchkey.ActionTokenUpdate:     "token.updated",
	latchkey.ActionTokenExpire:     "token.expiry_cut",
	latchkey.ActionTokenReuse:      "token.reuse",
	latchkey.ActionLeakSuspected:   "token.leak_suspected",
	latchkey.ActionSourceBlocked:   "source.blocked",
	latchkey.ActionSourceUnblocked: "source.unblocked",
	latchkey.ActionLeakReported:    "leak.reported",
	latchkey.ActionRotationDue:     "rotation.due",
	latchkey.ActionMCPToolChanged:  "mcp.tool_changed",
	latchkey.ActionAccessRequest:   "access.requested",
	latchkey.ActionAccessApprove:   "access.approved",
	latchkey.ActionAccessDeny:      "access.denied",
	latchkey.ActionAccessClaim:     "access.claimed",
	latchkey.ActionRolePut:         "role.changed",
	latchkey.ActionRoleDelete:      "role.deleted",
	latchkey.ActionKeyspacePut:     "keyspace.changed",
	"token.network_spread":         "token.network_spread",
	"token.ip_violations":          "token.ip_violations",
}

// Event is the JSON body of one delivery.
type Event struct {
	ID        int64     `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	Node      string    `json:"node,omitempty"`
	TokenID   string    `json:"token_id,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	ClientIP  string    `json:"client_ip,omitempty"`
	// Detail is the audit record's detail (grants, rule and evidence, ...).
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Log is where events come from. latchkey.Store satisfies it.
type Log interface {
	ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error)
	GetSetting(ctx context.Context, key string) (string, bool, error)
	PutSetting(ctx context.Context, key, value string) error
}

// Config sets up a Dispatcher.
type Config struct {
	URLs   []string
	Secret []byte
	// Types limits the event types sent (default: all of EventTypes).
	Types []string
	// MaxAttempts per event before it is given up (default 10: with the
	// backoff below, about 17 minutes).
	MaxAttempts int
	// Backoff is the first retry delay, doubled each time up to 5 minutes
	// (default 1s).
	Backoff time.Duration
	// Poll is how often the log is read when nothing woke the dispatcher
	// (default 1s).
	Poll time.Duration
	// Wake, when set, returns a channel closed when records are committed.
	Wake   func() <-chan struct{}
	Client *http.Client
	Logger *slog.Logger
	Node   string
	// Signature is the signing scheme: SignLatchkey (default),
	// SignStandard or SignBoth.
	Signature string
	// Tracer, when set, gives each delivery attempt a client span and
	// passes its trace context in traceparent.
	Tracer trace.Tracer
}

// Dispatcher delivers events to every URL, each from its own cursor.
type Dispatcher struct {
	cfg   Config
	log   Log
	types map[string]string
	stop  chan struct{}
	wg    sync.WaitGroup

	delivered, failed, retried atomic.Uint64
}

// MinSecretLen is the shortest secret accepted.
const MinSecretLen = 16

// Validate checks the configuration New would refuse: the secret's
// length, the URLs' schemes and the event types.
func (cfg Config) Validate() error {
	_, err := cfg.types()
	return err
}

// types checks cfg and maps the audit actions to send to their event
// types.
func (cfg Config) types() (map[string]string, error) {
	if len(cfg.Secret) < MinSecretLen {
		return nil, latchkey.Errorf(latchkey.EInvalid, "the webhook secret must be at least %d bytes", MinSecretLen)
	}
	switch cfg.Signature {
	case "", SignLatchkey, SignStandard, SignBoth:
	default:
		return nil, latchkey.Errorf(latchkey.EInvalid, "webhook signature %q: want latchkey, standard or both", cfg.Signature)
	}
	if cfg.Signature == SignStandard || cfg.Signature == SignBoth {
		if k := standardKey(cfg.Secret); len(k) < MinSecretLen {
			return nil, latchkey.Errorf(latchkey.EInvalid, "the webhook secret must hold at least %d bytes (a whsec_ secret must be base64 of them)", MinSecretLen)
		}
	}
	for _, u := range cfg.URLs {
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, latchkey.Errorf(latchkey.EInvalid, "webhook URL %q must be http:// or https://", u)
		}
	}
	if len(cfg.Types) == 0 {
		return EventTypes, nil
	}
	known := map[string]string{}
	for a, t := range EventTypes {
		known[t] = a
	}
	types := map[string]string{}
	for _, t := range cfg.Types {
		a, ok := known[t]
		if !ok {
			return nil, latchkey.Errorf(latchkey.EInvalid, "unknown webhook event type %q", t)
		}
		types[a] = t
	}
	return types, nil
}

// New checks cfg and returns a dispatcher; Start runs it.
func New(cfg Config, log Log) (*Dispatcher, error) {
	types, err := cfg.types()
	if err != nil {
		return nil, err
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Dispatcher{cfg: cfg, log: log, types: types, stop: make(chan struct{})}, nil
}

// Start launches one delivery loop per URL. A URL's starting cursor is
// settled before Start returns, so a URL new to the store gets every
// event written after Start — including those the server writes in the
// moments before the loop first runs. If the store cannot be read yet,
// the loop keeps retrying on its own.
func (d *Dispatcher) Start() {
	for _, u := range d.cfg.URLs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cursor, err := d.startCursor(ctx, cursorKey(u))
		cancel()
		d.wg.Go(func() { d.loop(u, cursor, err) })
	}
}

// Close stops the loops (an attempt in flight is abandoned and retried
// after the next start: delivery is at least once).
func (d *Dispatcher) Close() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
}

// Stats returns delivery counters by result.
func (d *Dispatcher) Stats() map[string]uint64 {
	return map[string]uint64{"delivered": d.delivered.Load(), "failed": d.failed.Load(), "retried": d.retried.Load()}
}

// CursorKey is the setting holding url's delivery cursor.
func CursorKey(url string) string { return cursorKey(url) }

func cursorKey(url string) string {
	sum := sha256.Sum256([]byte(url))
	return "webhook_cursor:" + hex.EncodeToString(sum[:8])
}

// loop delivers url's events from cursor on; a non-nil err means Start
// could not settle the cursor, and the loop retries that first.
func (d *Dispatcher) loop(url string, cursor int64, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-d.stop; cancel() }()
	key := cursorKey(url)
	for err != nil {
		d.cfg.Logger.Error("webhook: reading the cursor failed; retrying", "url", url, "err", err)
		if !d.sleep(5 * time.Second) {
			return
		}
		cursor, err = d.startCursor(ctx, key)
	}
	for {
		var wake <-chan struct{}
		if d.cfg.Wake != nil {
			wake = d.cfg.Wake()
		}
		page, err := d.log.ListAudit(ctx, latchkey.AuditFilter{After: cursor, Ascending: true, Limit: 100})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.cfg.Logger.Error("webhook: reading the audit log failed", "err", err)
			page.Events = nil
		}
		for i := range page.Events {
			ev := &page.Events[i]
			if typ, ok := d.types[ev.Action]; ok && ev.Kind != latchkey.KindVerify {
				if !d.deliver(ctx, url, ev, typ) {
					return // stopping
				}
			}
			cursor = ev.Seq
			// The event is decided (delivered, given up or not wanted):
			// record that even if Close arrives meanwhile, or a restart
			// would send it again.
			if err := d.saveCursor(ctx, key, cursor); err != nil {
				d.cfg.Logger.Error("webhook: saving the cursor failed", "err", err)
			}
		}
		if len(page.Events) == 100 {
			continue
		}
		select {
		case <-d.stop:
			return
		case <-wake:
		case <-time.After(d.cfg.Poll):
		}
	}
}

// saveCursor persists cursor outside the loop's cancellation, bounded
// by a short timeout of its own.
func (d *Dispatcher) saveCursor(ctx context.Context, key string, cursor int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return d.log.PutSetting(ctx, key, strconv.FormatInt(cursor, 10))
}

// startCursor is where a URL's deliveries resume: its saved cursor, or,
// for a new URL, the end of the log (it gets events from now on).
func (d *Dispatcher) startCursor(ctx context.Context, key string) (int64, error) {
	v, ok, err := d.log.GetSetting(ctx, key)
	if err != nil {
		return 0, err
	}
	if ok {
		return strconv.ParseInt(v, 10, 64)
	}
	page, err := d.log.ListAudit(ctx, latchkey.AuditFilter{Limit: 1})
	if err != nil {
		return 0, err
	}
	var c int64
	if len(page.Events) > 0 {
		c = page.Events[0].Seq
	}
	return c, d.log.PutSetting(ctx, key, strconv.FormatInt(c, 10))
}

func (d *Dispatcher) sleep(t time.Duration) bool {
	select {
	case <-d.stop:
		return false
	case <-time.After(t):
		return true
	}
}

// deliver posts one event until it is accepted or MaxAttempts is reached.
// It returns false only when the dispatcher is stopping.
func (d *Dispatcher) deliver(ctx context.Context, url string, ev *latchkey.AuditEvent, typ string) bool {
	body, _ := json.Marshal(Event{ID: ev.Seq, Type: typ, CreatedAt: ev.Time, Node: ev.Node, TokenID: ev.TokenID, Subject: ev.Subject,
		Actor: ev.Actor, Reason: ev.Reason, ClientIP: ev.ClientIP, Detail: ev.Detail})
	backoff := d.cfg.Backoff
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, err := d.post(ctx, url, typ, ev.Seq, body)
		if ctx.Err() != nil {
			return false
		}
		log := d.cfg.Logger.With("url", url, "event", typ, "id", ev.Seq, "attempt", attempt, "duration", time.Since(start))
		if err == nil && status/100 == 2 {
			d.delivered.Add(1)
			log.Info("webhook delivered", "status", status)
			return true
		}
		if attempt >= d.cfg.MaxAttempts {
			d.failed.Add(1)
			log.Error("webhook: giving up on an event", "status", status, "err", err)
			return true
		}
		d.retried.Add(1)
		log.Warn("webhook delivery failed; retrying", "status", status, "err", err, "retry_in", backoff)
		if !d.sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, 5*time.Minute)
	}
}

func (d *Dispatcher) post(ctx context.Context, url, typ string, id int64, body []byte) (status int, err error) {
	if d.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = d.cfg.Tracer.Start(ctx, "webhook.deliver "+typ, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("latchkey.event", typ), attribute.Int64("latchkey.event_id", id)))
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if err != nil || status/100 != 2 {
				span.SetStatus(codes.Error, "not delivered")
			}
			span.End()
		}()
	}
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "latchkey-webhook")
	req.Header.Set(EventHeader, typ)
	sid := strconv.FormatInt(id, 10)
	req.Header.Set(DeliveryHeader, sid)
	now := time.Now()
	if d.cfg.Signature != SignStandard {
		req.Header.Set(SignatureHeader, Sign(d.cfg.Secret, now, body))
	}
	if d.cfg.Signature == SignStandard || d.cfg.Signature == SignBoth {
		for k, v := range SignStandardHeaders(d.cfg.Secret, "evt_"+sid, now, body) {
			req.Header.Set(k, v)
		}
	}
	if d.cfg.Tracer != nil {
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// standardKey is the HMAC key of the Standard Webhooks scheme: a secret
// written whsec_<base64> is the bytes it encodes, any other the secret.
func standardKey(secret []byte) []byte {
	if b64, ok := bytes.CutPrefix(secret, []byte("whsec_")); ok {
		k, err := base64.StdEncoding.DecodeString(string(b64))
		if err != nil {
			return nil
		}
		return k
	}
	return secret
}

// StandardSecret is how to write secret for a Standard Webhooks verifier
// (whsec_<base64>): the secret itself when it is already in that form.
func StandardSecret(secret []byte) string {
	if bytes.HasPrefix(secret, []byte("whsec_")) {
		return string(secret)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(secret)
}

// SignStandardHeaders returns the Standard Webhooks headers of a message
// id with body sent at t.
func SignStandardHeaders(secret []byte, id string, t time.Time, body []byte) map[string]string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, standardKey(secret))
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return map[string]string{StandardIDHeader: id, StandardTimestampHeader: ts,
		StandardSignatureHeader: "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))}
}

// Sign returns the signature header value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Errors from Verify.
var (
	ErrBadSignature = errors.New("webhook: the signature does not match")
	ErrStale        = errors.New("webhook: the signature is too old (or from the future)")
)

// Verify checks a received signature header against body: the HMAC must
// match (compared in constant time) and the timestamp must be within
// tolerance of now, so a captured request cannot be replayed later.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}

// String names an event for logs.
func (e Event) String() string { return fmt.Sprintf("%s #%d", e.Type, e.ID) }
