package pggate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

// allowAll admits any token with the database's scopes.
type allowAll struct{}

func (allowAll) Verify(_ context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, error) {
	if req.Token != "good" {
		return latchkey.Decision{Code: latchkey.NotFound}, nil
	}
	return latchkey.Decision{Code: latchkey.Valid, TokenID: "tok1", Scopes: []string{"db.app:read"}}, nil
}

// fakeUpstream is a PostgreSQL server that admits anyone and checks that
// everything it receives is a well-formed message.
type fakeUpstream struct {
	wg      sync.WaitGroup // its connections' goroutines: wait before reading what they saw
	mu      sync.Mutex
	garbage []error
	got     int
}

func (u *fakeUpstream) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	a, b := net.Pipe()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.serve(b)
	}()
	return a, nil
}

func (u *fakeUpstream) serve(nc net.Conn) {
	defer nc.Close()
	be := pgproto3.NewBackend(nc, nc)
	sm, err := be.ReceiveStartupMessage()
	if err != nil {
		return
	}
	if _, ok := sm.(*pgproto3.CancelRequest); ok {
		return // as PostgreSQL does: no answer, the connection closes
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	be.Flush()
	for {
		msg, err := be.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.ErrClosedPipe) {
				u.mu.Lock()
				u.garbage = append(u.garbage, err)
				u.mu.Unlock()
			}
			return
		}
		u.mu.Lock()
		u.got++
		u.mu.Unlock()
		switch msg.(type) {
		case *pgproto3.Query:
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Sync:
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Terminate:
			return
		}
		be.Flush()
	}
}

func fuzzServer(u *fakeUpstream) *Server {
	set, err := ParseConfig([]byte(`
allow_cleartext_password: true
max_message_bytes: 64KiB
startup_timeout: 2s
databases:
  - name: app
    upstream: 127.0.0.1:5432
    sslmode: disable
    roles:
      - {scope: "db.app:read", user: app_ro, password: pw}
`), nil)
	if err != nil {
		panic(err)
	}
	return &Server{Settings: set, Verifier: allowAll{}, Sessions: &edge.Sessions{Verifier: allowAll{}}, Dial: u.dial}
}

// startup is a well-formed start: StartupMessage for database app, then
// the password.
func startup(password string) []byte {
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "u", "database": "app"}}).Encode(nil)
	b, _ = (&pgproto3.PasswordMessage{Password: password}).Encode(b)
	return b
}

// run feeds stream to one connection of s as its client and waits for the
// connection to end.
func run(t testing.TB, s *Server, stream []byte) {
	client, server := net.Pipe()
	c := &conn{s: s, nc: server, ending: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		c.serve()
	}()
	go io.Copy(io.Discard, client)
	client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	client.Write(stream)
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
}

func msg(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// The start and the message stream: malformed lengths, oversized
// messages, unknown types. Nothing panics, and whatever reaches the
// upstream is well-formed.
func FuzzClientStream(f *testing.F) {
	good := startup("good")
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	f.Add([]byte{}, false)
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47}, false) // SSLRequest
	f.Add([]byte{0, 0, 0, 3}, false)                 // a length below the minimum
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff}, false)     // a huge length
	f.Add(startup("bad"), false)
	f.Add(good, false)
	f.Add(q, true)
	f.Add(msg('Z', nil), true)                           // a server message from the client
	f.Add(msg('Q', []byte("no terminator")), true)       // a Query without its NUL
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff}, true)     // oversized
	f.Add([]byte{'Q', 0, 0, 0, 2}, true)                 // length below its own header
	f.Add(msg('p', []byte("second password\x00")), true) // authentication again
	f.Add(append(msg('P', []byte("s\x00SELECT $1\x00\x00\x00")), msg('S', nil)...), true)
	f.Fuzz(func(t *testing.T, data []byte, authenticated bool) {
		u := &fakeUpstream{}
		s := fuzzServer(u)
		stream := data
		if authenticated {
			stream = append(append([]byte{}, good...), data...)
		}
		run(t, s, stream)
		u.wg.Wait()
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(u.garbage) > 0 {
			t.Fatalf("the upstream received garbage: %v", u.garbage)
		}
	})
}

// A session through the fake upstream: a query is relayed and the
// oversized message after it ends the session without reaching upstream.
func TestRelayAndOversizedMessage(t *testing.T) {
	t.Parallel()
	u := &fakeUpstream{}
	s := fuzzServer(u)
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	big := msg('Q', make([]byte, 70<<10))
	run(t, s, append(append(startup("good"), q...), big...))
	u.wg.Wait()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.got != 1 || len(u.garbage) != 0 {
		t.Fatalf("the upstream got %d messages (want the one query), garbage %v", u.got, u.garbage)
	}
}

// The upstream password never prints, whatever the verb; nor in the
// Settings that hold it.
func TestRolePasswordNeverPrints(t *testing.T) {
	t.Parallel()
	s := fuzzServer(&fakeUpstream{}).Settings
	r := s.Databases["app"].Roles[0]
	for _, out := range []string{fmt.Sprintf("%v %+v %#v %s", r, r, r, r), fmt.Sprintf("%v %+v %#v", s, s, *s.Databases["app"])} {
		if strings.Contains(out, "pw}") || strings.Contains(out, `"pw"`) || strings.Contains(out, ":pw") {
			t.Fatalf("the password printed: %s", out)
		}
	}
}
