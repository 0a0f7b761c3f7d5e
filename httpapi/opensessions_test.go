package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/tokens"
)

// GET /v1/sessions lists the registry's sessions, filtered; DELETE ends
// one on behalf of the caller. A reader may list but not end; an unknown
// or oversized id, a second end and unknown parameters change nothing.
func TestOpenSessionsAPI(t *testing.T) {
	t.Parallel()
	api, e := wire(t, nil, tokens.Policy{})
	reg := &edge.Sessions{Verifier: api.Verifier, Node: "node-a"}
	api.OpenSessions = reg
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	ctx := context.Background()
	root := e.client(e.root)

	if l, err := root.ListSessions(ctx, ""); err != nil || l.Sessions == nil || len(l.Sessions) != 0 {
		t.Fatalf("empty list: %+v %v", l, err)
	}
	ended := map[string]chan string{}
	open := func(id, tokenID string, started time.Time) *edge.Session {
		s := &edge.Session{ID: id, Door: "db", TokenID: tokenID, Subject: "alice", ClientIP: "192.0.2.7",
			Resource: "analytics", Role: "analytics_ro", Started: started}
		ch := make(chan string, 1)
		ended[id] = ch
		reg.Open(s, latchkey.VerifyRequest{Token: "not-listed-anywhere"}, func(reason string) { ch <- reason })
		return s
	}
	now := time.Now().UTC().Truncate(time.Second)
	first := open("00000000000000aa", "AAAAAAAAAAAAAAAA", now.Add(-time.Minute))
	open("00000000000000bb", "BBBBBBBBBBBBBBBB", now)
	first.Used()
	first.Used()

	l, err := root.ListSessions(ctx, "")
	if err != nil || len(l.Sessions) != 2 {
		t.Fatalf("list: %+v %v", l, err)
	}
	s0 := l.Sessions[0]
	if s0.ID != "00000000000000aa" || s0.Node != "node-a" || s0.TokenID != "AAAAAAAAAAAAAAAA" || s0.Statements != 2 ||
		s0.Resource != "analytics" || s0.Role != "analytics_ro" || s0.ClientIP != "192.0.2.7" || !s0.Started.Equal(now.Add(-time.Minute)) {
		t.Fatalf("first session: %+v", s0)
	}
	if l, _ := root.ListSessions(ctx, "BBBBBBBBBBBBBBBB"); len(l.Sessions) != 1 || l.Sessions[0].ID != "00000000000000bb" {
		t.Fatalf("token filter: %+v", l)
	}
	_, _, raw := e.do(t, "GET", "/v1/sessions", e.root, "")
	if strings.Contains(raw, "not-listed-anywhere") {
		t.Fatalf("the list holds the session's token: %s", raw)
	}
	for _, q := range []string{"?door=http", "?door=db"} {
		var got client.OpenSessionList
		code, _, body := e.do(t, "GET", "/v1/sessions"+q, e.root, "")
		json.Unmarshal([]byte(body), &got)
		if want := map[string]int{"?door=http": 0, "?door=db": 2}[q]; code != 200 || len(got.Sessions) != want {
			t.Fatalf("GET /v1/sessions%s: %d %s, want %d sessions", q, code, body, want)
		}
	}
	if code, _, body := e.do(t, "GET", "/v1/sessions?tokenid=x", e.root, ""); code != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d %s", code, body)
	}

	// A reader lists but cannot end.
	reader, err := root.CreateToken(ctx, client.CreateRequest{Scopes: []string{latchkey.ScopeAuditRead}})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := e.client(reader.Plaintext).ListSessions(ctx, ""); err != nil || len(l.Sessions) != 2 {
		t.Fatalf("reader's list: %+v %v", l, err)
	}
	if err := e.client(reader.Plaintext).EndSession(ctx, "00000000000000aa"); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Fatalf("a reader's end: %v, want forbidden", err)
	}
	for _, id := range []string{"nope", strings.Repeat("a", 65)} {
		if err := root.EndSession(ctx, id); latchkey.ErrorCode(err) != latchkey.ENotFound {
			t.Fatalf("end %q: %v, want not found", id, err)
		}
	}
	if reg.Len() != 2 {
		t.Fatalf("refused ends ended sessions: %d open", reg.Len())
	}

	// The administrator's end: the session's door is told, with the
	// administrator's token id on the session for its end record.
	if err := root.EndSession(ctx, "00000000000000aa"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ended["00000000000000aa"]:
		if r != edge.EndAdmin {
			t.Fatalf("ended with %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not ended")
	}
	all, err := root.ListTokens(ctx, latchkey.TokenFilter{Subject: "latchkey-root"})
	if err != nil || len(all.Tokens) != 1 {
		t.Fatalf("the root token: %+v %v", all, err)
	}
	if first.EndedBy() != all.Tokens[0].ID {
		t.Fatalf("ended by %q, want the root token %s", first.EndedBy(), all.Tokens[0].ID)
	}
	if err := root.EndSession(ctx, "00000000000000aa"); latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Fatalf("second end: %v, want not found", err)
	}
	if l, _ := root.ListSessions(ctx, ""); len(l.Sessions) != 1 || l.Sessions[0].ID != "00000000000000bb" {
		t.Fatalf("after the end: %+v", l)
	}
}
