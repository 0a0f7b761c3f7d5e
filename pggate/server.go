// Package pggate is the database gateway (docs/architecture.md §10): a PostgreSQL
// wire-protocol proxy where a client's password is its latchkey token.
//
// A client connects to the gateway as it would to PostgreSQL, naming one
// of the configured databases and giving its token as the password (the
// gateway asks for a cleartext password, over TLS unless the client is on
// loopback). The token is checked by the one verifier; the first of the
// database's roles whose scope the token covers is the login the gateway
// uses upstream, with a password the client never sees. From then on the
// gateway relays messages both ways (decoded and re-encoded by pgproto3,
// so nothing malformed reaches the upstream), records every statement in
// the audit log, and ends the session the moment its token stops being
// valid: revoked, suspended, expired or idle, on any node.
//
// What a session may do is enforced by the upstream role's own privileges,
// not by reading SQL: a read-only role cannot be talked into writing.
package pggate

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

// Recorder takes the records of a session in order (audit.Pipeline).
type Recorder interface {
	RecordOn(key uint64, fill func(ev *latchkey.AuditEvent))
}

// Server is the database gateway.
type Server struct {
	Settings *Settings
	Verifier latchkey.Verifier
	// Refuser records connections refused before there was a token to
	// decide on (no password, TLS required, unknown database, garbage).
	Refuser        latchkey.Refuser
	Sessions       *edge.Sessions
	Audit          Recorder
	TrustedProxies latchkey.TrustedProxies
	// TLS is offered to clients that ask (SSLRequest); nil: none.
	TLS    *tls.Config
	Node   string
	Logger *slog.Logger
	// NoAccessLog turns off the line logged at info for each admission.
	NoAccessLog bool
	// Dial reaches the upstreams (default: net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	ln    net.Listener
	conns map[*conn]struct{}
	byPID map[uint32]*conn // the admitted sessions, by the process id the client was given
	wg    sync.WaitGroup
	// draining is set by Shutdown; every session reads it at the end of
	// each transaction, so it is not under mu.
	draining atomic.Bool
}

// Listen binds the configured address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.Settings.Listen)
	if err != nil {
		return nil, fmt.Errorf("database gateway: %w", err)
	}
	return ln, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(5*time.Millisecond, 2*backoff), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := &conn{s: s, nc: nc, ending: make(chan struct{})}
		if !s.track(c) {
			nc.Close()
			continue
		}
		go func() {
			defer s.untrack(c)
			defer func() {
				// A bug must cost one connection, not the server. The value
				// is not logged: it could hold what the client sent.
				if v := recover(); v != nil {
					s.logger().Error("database gateway: a connection failed on an internal error", "type", fmt.Sprintf("%T", v))
					c.nc.Close()
				}
			}()
			c.serve()
		}()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	if s.conns == nil {
		s.conns, s.byPID = map[*conn]struct{}{}, map[uint32]*conn{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.pid != 0 && s.byPID[c.pid] == c {
		delete(s.byPID, c.pid)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, ends every session that is idle (between
// transactions) at once and every other one when its transaction ends,
// and waits for them until ctx ends; then it ends the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	var all []*conn
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		if !c.admitted.Load() || c.idle.Load() {
			c.end(edge.EndShutdown)
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.end(edge.EndShutdown)
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(time.Second): // each end closes both sides; this only bounds a stuck write
	}
	return fmt.Errorf("database gateway: sessions still open at the shutdown deadline: %w", ctx.Err())
}

// open is how many sessions are admitted.
func (s *Server) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byPID)
}

// register gives c a random process id and key for cancel requests (the
// protocol's 31 and 32 bits): the client never learns the upstream's.
func (s *Server) register(c *conn) {
	var b [8]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byPID == nil {
		s.byPID = map[uint32]*conn{}
	}
	for {
		rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 || s.byPID[pid] != nil {
			continue
		}
		c.pid, c.key = pid, b[4:]
		s.byPID[pid] = c
		return
	}
}

// cancel forwards a client's cancel request to the upstream its session
// is on, when the key matches. (The client never learns the upstream's.)
func (s *Server) cancel(m *pgproto3.CancelRequest) {
	s.mu.Lock()
	c := s.byPID[m.ProcessID]
	s.mu.Unlock()
	if c == nil || subtle.ConstantTimeCompare(c.key, m.SecretKey) != 1 {
		return
	}
	c.cancelUpstream()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
