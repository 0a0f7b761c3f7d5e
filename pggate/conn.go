package pggate

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// SQLSTATEs the gateway answers with.
const (
	StateInvalidPassword   = "28P01" // the token is not usable
	StateNotAuthorized     = "28000" // a real token, not allowed here; or TLS required
	StateTooMany           = "53300" // rate limited, or max_sessions reached
	StateCannotConnectNow  = "57P03" // tokens cannot be verified right now
	StateTerminated        = "57P01" // the session was ended (revoked, expired...)
	StateNoDatabase        = "3D000" // no such database in the route file
	StateProtocolViolation = "08P01"
	StateUpstream          = "08006" // the upstream could not be reached
	StateFeatureNotSupp    = "0A000"
)

// Reasons for the refusals recorded before there is a token to decide on.
const (
	ReasonBadStartup  = "bad_startup"
	ReasonTLSRequired = "tls_required"
	ReasonNoPassword  = edge.ReasonNoCredential
	ReasonNoDatabase  = "no_database"
	ReasonReplication = "replication"
	ReasonTooMany     = "max_sessions"
)

// flushAt bounds what a relay buffers before writing.
const flushAt = 64 << 10

// conn is one client connection, and once admitted its session.
type conn struct {
	s    *Server
	nc   net.Conn // the client's (TLS once negotiated)
	be   *pgproto3.Backend
	addr edge.Addr
	tls  bool

	// Set at admission.
	db       *Database
	role     Role
	user     string
	sess     *edge.Session
	up       net.Conn
	fe       *pgproto3.Frontend
	upPID    uint32
	upKey    []byte
	pid      uint32
	key      []byte
	admitted atomic.Bool
	idle     atomic.Bool // between transactions: the upstream's last ReadyForQuery said idle

	wmu        sync.Mutex // the client's writer (be.Send, be.Flush)
	endOnce    sync.Once
	cancels    sync.WaitGroup // cancel requests end sent upstream, still on their way
	ending     chan struct{}
	reason     string // set once, in end
	upFatal    atomic.Bool
	terminated atomic.Bool // the client sent Terminate: the upstream closing next is its doing
	prepared   map[string]string
	portals    map[string]portal
	clientBuf  int // bytes sent upstream since the last flush
}

type portal struct {
	text   string
	params []string
}

func (c *conn) serve() {
	defer c.nc.Close()
	s := c.s
	c.nc.SetDeadline(time.Now().Add(s.Settings.StartupTimeout))
	c.addr = edge.ConnAddr(c.nc, s.TrustedProxies)
	c.be = pgproto3.NewBackend(c.nc, c.nc)
	c.be.SetMaxBodyLen(s.Settings.MaxMessageBytes)
	for tries := 0; tries < 4; tries++ {
		msg, err := c.be.ReceiveStartupMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isTimeout(err) {
				c.refused(ReasonBadStartup)
			}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if c.tls {
				c.refused(ReasonBadStartup)
				return
			}
			if s.TLS == nil {
				if _, err := c.nc.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := c.nc.Write([]byte{'S'}); err != nil {
				return
			}
			// Whatever the client sent after SSLRequest in clear is
			// dropped with the old reader: only what arrives inside TLS
			// is read from here on.
			tc := tls.Server(c.nc, s.TLS)
			if err := tc.Handshake(); err != nil {
				return
			}
			c.nc, c.tls = tc, true
			c.be = pgproto3.NewBackend(tc, tc)
			c.be.SetMaxBodyLen(s.Settings.MaxMessageBytes)
		case *pgproto3.GSSEncRequest:
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.CancelRequest:
			s.cancel(m)
			return
		case *pgproto3.StartupMessage:
			c.startup(m)
			return
		}
	}
	c.refused(ReasonBadStartup)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// verifyRequest is the connection's verification, without a scope yet.
func (c *conn) verifyRequest(token string) latchkey.VerifyRequest {
	r := latchkey.VerifyRequest{Token: token, ClientIP: c.addr.IP, Source: c.addr.Source, Action: latchkey.ActionDBConnect}
	if c.db != nil {
		r.Resource, r.Keyspace = c.db.Resource, c.db.Keyspace
	}
	return r
}

// refused records a connection refused before there was a token to
// decide on.
func (c *conn) refused(reason string) {
	if c.s.Refuser != nil {
		req := c.verifyRequest("")
		c.s.Refuser.Refuse(&req, reason)
	}
}

// fatal sends a FATAL ErrorResponse.
func (c *conn) fatal(code, msg string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	c.be.Flush()
}

func (c *conn) startup(m *pgproto3.StartupMessage) {
	s := c.s
	params := m.Parameters
	c.user = params["user"]
	dbname := params["database"]
	if dbname == "" {
		dbname = c.user
	}
	if v := params["replication"]; v != "" && !isFalse(v) {
		c.refused(ReasonReplication)
		c.fatal(StateFeatureNotSupp, "replication connections are not taken through latchkey")
		return
	}
	if !c.tls && !s.Settings.AllowCleartextPassword && !loopback(c.addr) {
		// Refused before the password is asked for: the token never crosses
		// the network in clear.
		c.refused(ReasonTLSRequired)
		c.fatal(StateNotAuthorized, "latchkey takes tokens only over TLS: connect with sslmode=require")
		return
	}
	if max := s.Settings.MaxSessions; max > 0 && s.open() >= max {
		c.refused(ReasonTooMany)
		c.fatal(StateTooMany, "sorry, too many clients already")
		return
	}
	if unknown, newer := negotiate(m); newer {
		c.be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown})
	}
	c.be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := c.be.Flush(); err != nil {
		return
	}
	if err := c.be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return
	}
	msg, err := c.be.Receive()
	if err != nil {
		return
	}
	pm, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		c.refused(ReasonBadStartup)
		c.fatal(StateProtocolViolation, "expected a password message")
		return
	}
	token := strings.Clone(pm.Password)
	if token == "" {
		c.refused(ReasonNoPassword)
		c.fatal(StateInvalidPassword, "password authentication failed: a latchkey token is the password")
		return
	}
	c.db = s.Settings.Databases[dbname]
	d, req, ok := c.admit(token, dbname)
	if !ok {
		return
	}
	c.connect(params, d, req)
}

func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "off", "no", "0":
		return true
	}
	return false
}

func loopback(a edge.Addr) bool {
	ip, err := netip.ParseAddr(a.IP)
	return err == nil && ip.IsLoopback()
}

// negotiate reports whether the client asked for more than protocol 3.0
// (a newer minor version, or protocol options): the answer is then
// NegotiateProtocolVersion, naming the options it does not take, and the
// session runs on 3.0.
func negotiate(m *pgproto3.StartupMessage) (unknown []string, newer bool) {
	for k := range m.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	return unknown, m.ProtocolVersion != pgproto3.ProtocolVersion30 || len(unknown) > 0
}

// admit verifies the token for the database and picks the role. A
// refusal is answered and recorded (by the verifier) here.
func (c *conn) admit(token, dbname string) (d latchkey.Decision, _ latchkey.VerifyRequest, ok bool) {
	s := c.s
	start := time.Now()
	defer func() { c.accessLog(dbname, &d, ok, time.Since(start)) }()
	ctx, cancel := context.WithTimeout(context.Background(), s.Settings.ConnectTimeout)
	defer cancel()
	id, key := edge.NewSessionID()
	c.sess = &edge.Session{ID: id, Key: key, Door: "db", ClientIP: c.addr.IP, Resource: dbname}
	// First a look without spending anything: which of the database's
	// scopes does the token hold? Only a refusal is recorded.
	probe := c.verifyRequest(token)
	probe.RequestID, probe.NoSpend, probe.AuditFailuresOnly = id, true, true
	probe.Detail = c.detail(dbname, "")
	d, err := s.Verifier.Verify(ctx, &probe)
	if err != nil || !d.Valid() {
		c.deny(d, err)
		return d, probe, false
	}
	if c.db == nil {
		c.refused(ReasonNoDatabase)
		c.fatal(StateNoDatabase, fmt.Sprintf("database %q does not exist", edge.Clip(secret.Redact(dbname), 63)))
		return d, probe, false
	}
	req := c.verifyRequest(token)
	req.RequestID = id
	if r, ok := c.pick(d.Scopes); ok {
		c.role = r
		req.Scopes = []string{r.Scope}
	} else {
		// None is covered: the verification says so (INSUFFICIENT_SCOPE,
		// with the scopes that would do), and is recorded like any other.
		for _, r := range c.db.Roles {
			req.Scopes = append(req.Scopes, r.Scope)
		}
	}
	req.Detail = c.detail(dbname, c.role.User)
	d, err = s.Verifier.Verify(ctx, &req)
	if err != nil || !d.Valid() {
		c.deny(d, err)
		return d, req, false
	}
	return d, req, true
}

// accessLog logs the connection's admission at info: the database, the
// role, the outcome, how long it took, the token id and the source. The
// database name is the client's and is clipped and redacted.
func (c *conn) accessLog(dbname string, d *latchkey.Decision, ok bool, took time.Duration) {
	l := c.s.Logger
	if l == nil || c.s.NoAccessLog || !l.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	status := "refused"
	if ok {
		status = "admitted"
	}
	outcome := d.Code.String()
	if !ok && d.Valid() { // verified, but no such database
		outcome = ReasonNoDatabase
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "access", slog.String("door", "db"),
		slog.String("route", edge.Clip(secret.Redact(dbname), 63)), slog.String("role", c.role.User),
		slog.String("status", status), slog.Duration("latency", took), slog.String("token_id", d.TokenID),
		slog.String("source", c.addr.IP), slog.String("outcome", outcome))
}

// pick is the role a token with grants gets: the one the client named as
// its user, when the token covers it, else the first the token covers.
func (c *conn) pick(grants []string) (Role, bool) {
	var first *Role
	for i := range c.db.Roles {
		r := &c.db.Roles[i]
		if !latchkey.ScopesCover(grants, r.Scope) {
			continue
		}
		if r.User == c.user {
			return *r, true
		}
		if first == nil {
			first = r
		}
	}
	if first == nil {
		return Role{}, false
	}
	return *first, true
}

// detail is the audit detail of the connection's records.
func (c *conn) detail(dbname, role string) json.RawMessage {
	b, _ := json.Marshal(struct {
		Session  string `json:"session"`
		Database string `json:"database"`
		Role     string `json:"role,omitempty"`
		User     string `json:"user,omitempty"`
		TLS      bool   `json:"tls"`
	}{c.sess.ID, edge.Clip(secret.Redact(dbname), 63), role, edge.Clip(secret.Redact(c.user), 63), c.tls})
	return b
}

// deny answers a refused (or undecided) verification with the SQLSTATE of
// its class, and nothing more than the HTTP gateway would say.
func (c *conn) deny(d latchkey.Decision, err error) {
	switch edge.Classify(d, err) {
	case edge.Unavailable:
		c.fatal(StateCannotConnectNow, "latchkey cannot verify tokens right now (temporarily_unavailable)")
	case edge.Insufficient:
		c.fatal(StateNotAuthorized, "not authorized (insufficient_scope)")
	case edge.Limited:
		c.fatal(StateTooMany, fmt.Sprintf("rate limited (rate_limited): retry in %d s", edge.RetryAfter(d.Rate.RetryAfter)))
	default:
		c.fatal(StateInvalidPassword, "password authentication failed (invalid_token)")
	}
}

// connect opens the upstream session as the picked role and hands the
// client over to the relay.
func (c *conn) connect(params map[string]string, d latchkey.Decision, req latchkey.VerifyRequest) {
	s := c.s
	ctx, cancel := context.WithTimeout(context.Background(), s.Settings.ConnectTimeout)
	hc, err := c.dialUpstream(ctx, params)
	cancel()
	if err != nil {
		// The upstream's answer stays in the log: it names hosts and roles
		// the client has no need to know.
		s.logger().Warn("database gateway: the upstream refused or could not be reached",
			"database", c.db.Name, "role", c.role.User, "err", err)
		c.fatal(StateUpstream, "latchkey could not open the database session")
		return
	}
	c.up, c.fe, c.upPID, c.upKey = hc.Conn, hc.Frontend, hc.PID, hc.SecretKey
	c.fe.SetMaxBodyLen(max(s.Settings.MaxMessageBytes, 1<<30))
	defer c.up.Close()
	defer func() {
		// The connection's goroutine outlives the cancel its end sent. Do
		// waits for an end still running elsewhere (so its Add comes
		// before Wait) and makes any later end a no-op.
		c.endOnce.Do(func() {})
		c.cancels.Wait()
	}()
	s.register(c)
	c.be.Send(&pgproto3.AuthenticationOk{})
	keys := make([]string, 0, len(hc.ParameterStatuses))
	for k := range hc.ParameterStatuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.be.Send(&pgproto3.ParameterStatus{Name: k, Value: hc.ParameterStatuses[k]})
	}
	c.be.Send(&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.key})
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: hc.TxStatus})
	if err := c.be.Flush(); err != nil {
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.idle.Store(hc.TxStatus == 'I')

	es := c.sess
	es.TokenID, es.Subject, es.Role = strings.Clone(d.TokenID), d.Subject, c.role.User
	es.Started, es.ExpiresAt = time.Now(), d.ExpiresAt
	remove := s.Sessions.Open(es, req, c.end)
	defer remove()
	c.admitted.Store(true)
	if s.draining.Load() {
		c.end(edge.EndShutdown)
	}

	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		c.fromUpstream()
	}()
	c.fromClient()
	<-relayed
	if c.reason != edge.EndClient && !(c.reason == edge.EndUpstream && c.upFatal.Load()) {
		c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		c.fatal(StateTerminated, "terminating connection: "+edge.Explain(c.reason))
	}
	c.record(latchkey.ActionDBSessionEnd, c.reason, c.endDetail())
}

// dialUpstream logs in upstream as the role, with the client's session
// parameters (application_name, client_encoding, options...) but never
// its user, database or password.
func (c *conn) dialUpstream(ctx context.Context, params map[string]string) (*pgconn.HijackedConn, error) {
	db := c.db
	cs := fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=%s", quote(db.Host), db.Port, quote(db.Database), quote(c.role.User), db.SSLMode)
	cfg, err := pgconn.ParseConfigWithOptions(cs, pgconn.ParseConfigOptions{})
	if err != nil {
		return nil, err
	}
	cfg.Password = c.role.password
	cfg.DialFunc = c.s.dial
	cfg.RuntimeParams = map[string]string{}
	for k, v := range params {
		switch k {
		case "user", "database", "replication":
		default:
			if !strings.HasPrefix(k, "_pq_.") {
				cfg.RuntimeParams[k] = v
			}
		}
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return pc.Hijack()
}

// quote writes a libpq connection-string value.
func quote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// end ends the session (once): the upstream connection is closed, which
// stops its running statement and wakes both relays; the client is told
// why when both have stopped. It never blocks: the registry calls it.
func (c *conn) end(reason string) {
	c.endOnce.Do(func() {
		c.reason = reason
		close(c.ending)
		if reason != edge.EndClient && reason != edge.EndUpstream && c.up != nil && !c.idle.Load() {
			// A statement still running upstream stops now.
			c.cancels.Add(1)
			go func() {
				defer c.cancels.Done()
				c.cancelUpstream()
			}()
		}
		if c.up != nil {
			c.up.Close()
		}
		c.nc.SetReadDeadline(time.Now())
	})
}

// cancelUpstream asks the upstream to cancel the session's running
// statement (a cancel request on a connection of its own).
func (c *conn) cancelUpstream() {
	if c.upKey == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	network, addr := pgconn.NetworkAddress(c.db.Host, c.db.Port) // TCP, or the Unix socket
	nc, err := c.s.dial(ctx, network, addr)
	if err != nil {
		return
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.CancelRequest{ProcessID: c.upPID, SecretKey: c.upKey})
	if fe.Flush() == nil {
		io.Copy(io.Discard, nc) // the server closes it when done
	}
}

// fromClient relays the client's messages upstream, recording each
// statement, until the session ends.
func (c *conn) fromClient() {
	for {
		msg, err := c.be.Receive()
		if err != nil {
			select {
			case <-c.ending:
			default:
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
					c.end(edge.EndClient)
				} else {
					c.end(edge.EndProtocol)
				}
			}
			return
		}
		c.idle.Store(false)
		flush := false
		switch m := msg.(type) {
		case *pgproto3.Query:
			c.statement("simple", m.String, nil)
			flush = true
		case *pgproto3.Parse:
			c.prepare(m.Name, m.Query)
		case *pgproto3.Bind:
			c.bind(m)
		case *pgproto3.Execute:
			p := c.portals[m.Portal]
			c.statement("extended", p.text, p.params)
		case *pgproto3.Close:
			if m.ObjectType == 'S' {
				delete(c.prepared, m.Name)
			} else {
				delete(c.portals, m.Name)
			}
		case *pgproto3.FunctionCall:
			c.statement("function", fmt.Sprintf("-- function call, oid %d", m.Function), nil)
			flush = true
		case *pgproto3.CopyData:
			c.clientBuf += len(m.Data)
		case *pgproto3.Sync, *pgproto3.Flush, *pgproto3.CopyDone, *pgproto3.CopyFail:
			flush = true
		case *pgproto3.Terminate:
			c.terminated.Store(true)
			c.fe.Send(m)
			c.fe.Flush()
			c.end(edge.EndClient)
			return
		case *pgproto3.Describe:
		default:
			// Authentication messages (a second password...) have no place
			// in a session: nothing of them goes upstream.
			c.end(edge.EndProtocol)
			return
		}
		c.fe.Send(msg)
		if flush || c.clientBuf >= flushAt {
			c.clientBuf = 0
			if err := c.fe.Flush(); err != nil {
				c.end(edge.EndUpstream)
				return
			}
		}
	}
}

// fromUpstream relays the upstream's messages to the client, writing
// whenever nothing more is waiting (so a result set goes out in few
// writes, and a reply is never held back).
func (c *conn) fromUpstream() {
	pending := 0
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			if c.terminated.Load() {
				c.end(edge.EndClient) // PostgreSQL closed on the client's Terminate, maybe before fromClient said so
			} else {
				c.end(edge.EndUpstream)
			}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			for _, v := range m.Values {
				pending += len(v)
			}
		case *pgproto3.CopyData:
			pending += len(m.Data)
		case *pgproto3.ErrorResponse:
			if m.Severity == "FATAL" || m.Severity == "PANIC" {
				c.upFatal.Store(true)
			}
		}
		c.wmu.Lock()
		select {
		case <-c.ending:
			c.wmu.Unlock()
			return
		default:
		}
		c.be.Send(msg)
		var werr error
		if c.fe.ReadBufferLen() == 0 || pending >= flushAt {
			pending = 0
			werr = c.be.Flush()
		}
		c.wmu.Unlock()
		if werr != nil {
			c.end(edge.EndClient)
			return
		}
		if rfq, ok := msg.(*pgproto3.ReadyForQuery); ok && rfq.TxStatus == 'I' {
			c.idle.Store(true)
			if c.s.draining.Load() {
				c.end(edge.EndShutdown)
				return
			}
		}
	}
}

// maxNamed bounds the prepared statements and portals a session's record
// keeps track of (their text, for the audit).
const maxNamed = 10_000

func (c *conn) prepare(name, query string) {
	if c.prepared == nil {
		c.prepared = map[string]string{}
	}
	if _, ok := c.prepared[name]; !ok && len(c.prepared) >= maxNamed {
		for k := range c.prepared {
			delete(c.prepared, k)
			break
		}
	}
	c.prepared[name] = c.text(query)
}

func (c *conn) bind(m *pgproto3.Bind) {
	if c.portals == nil {
		c.portals = map[string]portal{}
	}
	if _, ok := c.portals[m.DestinationPortal]; !ok && len(c.portals) >= maxNamed {
		for k := range c.portals {
			delete(c.portals, k)
			break
		}
	}
	p := portal{text: c.prepared[m.PreparedStatement]}
	if p.text == "" {
		p.text = "-- prepared statement not seen by latchkey: " + edge.Clip(secret.Redact(m.PreparedStatement), 63)
	}
	if c.s.Settings.LogParameters {
		for _, v := range m.Parameters {
			p.params = append(p.params, paramText(v))
		}
	}
	c.portals[m.DestinationPortal] = p
}

// paramText is a bound value as the audit keeps it: redacted, cut.
func paramText(v []byte) string {
	if v == nil {
		return "NULL"
	}
	s := string(v)
	if !utf8.ValidString(s) {
		s = fmt.Sprintf(`\x%x`, v[:min(len(v), 128)])
	}
	return edge.Clip(secret.Redact(edge.Clip(s, 512)), 256)
}

// text is a statement's text as the audit keeps it: redacted (a token
// pasted into SQL is a secret), then cut at the limit.
func (c *conn) text(q string) string {
	lim := c.s.Settings.StatementTextLimit
	// Cut first with room for a token across the limit, so that a huge
	// statement is not scanned whole, then redact, then cut to the limit.
	return edge.Clip(secret.Redact(edge.Clip(q, lim+256)), lim)
}

// statement records one statement of the session, in order.
func (c *conn) statement(protocol, text string, params []string) {
	c.sess.Used()
	n := c.sess.Statements()
	if protocol == "simple" {
		text = c.text(text)
	}
	c.record(latchkey.ActionDBStatement, "", statementDetail(c.sess.ID, n, c.db.Name, protocol, text, params))
}

// statementDetail is a db.statement record's detail,
// {"session","n","database","protocol","statement","params"}, appended
// by hand: it is made once per statement, on the session's goroutine.
// Invalid UTF-8 becomes U+FFFD, as encoding/json would make it.
func statementDetail(session string, n int64, database, protocol, text string, params []string) json.RawMessage {
	size := 80 + len(session) + len(database) + len(protocol) + len(text)
	for _, p := range params {
		size += len(p) + 3
	}
	b := make([]byte, 0, size)
	b = append(b, `{"session":`...)
	b, _ = jsontext.AppendQuote(b, session)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `,"database":`...)
	b, _ = jsontext.AppendQuote(b, database)
	b = append(b, `,"protocol":`...)
	b, _ = jsontext.AppendQuote(b, protocol)
	b = append(b, `,"statement":`...)
	b, _ = jsontext.AppendQuote(b, text)
	if len(params) > 0 {
		b = append(b, `,"params":[`...)
		for i, p := range params {
			if i > 0 {
				b = append(b, ',')
			}
			b, _ = jsontext.AppendQuote(b, p)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (c *conn) endDetail() json.RawMessage {
	b, _ := json.Marshal(struct {
		Session    string `json:"session"`
		Database   string `json:"database"`
		Role       string `json:"role"`
		Statements int64  `json:"statements"`
		DurationMS int64  `json:"duration_ms"`
	}{c.sess.ID, c.db.Name, c.role.User, c.sess.Statements(), time.Since(c.sess.Started).Milliseconds()})
	return b
}

func (c *conn) record(action, reason string, detail json.RawMessage) {
	if c.s.Audit == nil {
		return
	}
	es, node := c.sess, c.s.Node
	c.s.Audit.RecordOn(es.Key, func(ev *latchkey.AuditEvent) {
		ev.Time = time.Now()
		ev.Node = node
		ev.RequestID = es.ID
		ev.Kind = latchkey.KindSession
		ev.Action = action
		ev.TokenID = es.TokenID
		ev.Subject = es.Subject
		ev.ClientIP = es.ClientIP
		ev.Outcome = latchkey.OutcomeOK
		ev.Reason = reason
		ev.Detail = detail
		if action == latchkey.ActionDBSessionEnd {
			ev.Actor = es.EndedBy() // the administrator who ended it, if one did
		}
	})
}
