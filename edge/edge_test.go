package edge_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

func TestCanonicalPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/": "/", "/a": "/a", "/a/b/": "/a/b/", "/a/%41": "/a/A", "/a%20b": "/a b", "/a/b.c": "/a/b.c", "/...": "/...",
	} {
		if got, ok := edge.CanonicalPath(in); !ok || got != want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "a", "*", "//", "/a//b", "/.", "/..", "/a/./b", "/a/%2e", "/a/%2E%2e", "/a%2fb", "/a%2Fb", `/a\b`, "/a%5cb",
		"/a;b", "/a%3bb", "/a/%00", "/a/%7f", "/a/%", "/a/%4", "/a/%g0", "/a/%25", "/a/\x01"} {
		if got, ok := edge.CanonicalPath(in); ok {
			t.Errorf("CanonicalPath(%q) = %q, accepted", in, got)
		}
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/a/%2e%2e/b", "/a/..;/b", "/%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := edge.CanonicalPath(s)
		if !ok {
			return
		}
		// What is accepted has no dot segment, empty segment or separator
		// trick left, and is its own canonical form once decoded.
		for i, seg := range strings.Split(p[1:], "/") {
			last := i == strings.Count(p[1:], "/")
			if seg == "." || seg == ".." || (seg == "" && !last && p != "/") || strings.ContainsAny(seg, "\\;") {
				t.Fatalf("CanonicalPath(%q) = %q", s, p)
			}
		}
	})
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	tp := latchkey.TrustedProxies{netip.MustParsePrefix("10.0.0.0/8")}
	for _, c := range []struct {
		name, remote, xff string
		want              edge.Addr
	}{
		{"direct client", "203.0.113.9:4000", "", edge.Addr{IP: "203.0.113.9", Source: netip.MustParseAddr("203.0.113.9")}},
		{"untrusted peer's header is ignored", "203.0.113.9:4000", "198.51.100.1", edge.Addr{IP: "203.0.113.9", Source: netip.MustParseAddr("203.0.113.9")}},
		{"trusted proxy names the client", "10.1.1.1:4000", "198.51.100.1", edge.Addr{IP: "198.51.100.1", Source: netip.MustParseAddr("198.51.100.1"), Forwarded: true}},
		{"proxy chain: the first untrusted hop from the right", "10.1.1.1:4000", "6.6.6.6, 198.51.100.1, 10.2.2.2", edge.Addr{IP: "198.51.100.1", Source: netip.MustParseAddr("198.51.100.1"), Forwarded: true}},
		{"a trusted proxy alone is never a source", "10.1.1.1:4000", "", edge.Addr{IP: "10.1.1.1"}},
		{"v4-mapped peer", "[::ffff:203.0.113.9]:4000", "", edge.Addr{IP: "203.0.113.9", Source: netip.MustParseAddr("203.0.113.9")}},
		{"not an address", "pipe", "", edge.Addr{IP: "pipe"}},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := edge.ClientAddr(r, tp); got != c.want {
			t.Errorf("%s: ClientAddr = %+v, want %+v", c.name, got, c.want)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.1.1:1"
	if src := edge.PeerSource(r, tp); src.IsValid() {
		t.Errorf("PeerSource of a trusted proxy = %v", src)
	}
	r.RemoteAddr = "203.0.113.9:1"
	if src := edge.PeerSource(r, tp); src != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("PeerSource = %v", src)
	}
}

func TestCredential(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		auth, key, header string
		want              string
		ok                bool
	}{
		{"Bearer lk_abc", "", "", "lk_abc", true},
		{"bearer   lk_abc  ", "", "", "lk_abc", true},
		{"BEARER lk_abc", "", "", "lk_abc", true},
		{"Basic dXNlcjpwYXNz", "", "", "", false},
		{"Bearer", "", "", "", false},
		{"", "lk_key", "X-Api-Key", "lk_key", true},
		{"Bearer lk_abc", "lk_key", "X-Api-Key", "lk_key", true},
		{"Bearer lk_abc", "", "X-Api-Key", "lk_abc", true},
		{"", "lk_key", "", "", false}, // the header counts only when configured
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		if c.key != "" {
			r.Header.Set("X-Api-Key", c.key)
		}
		got, ok := edge.Credential(r, c.header)
		if got != c.want || ok != c.ok {
			t.Errorf("Credential(%q, %q, %q) = %q, %v; want %q, %v", c.auth, c.key, c.header, got, ok, c.want, c.ok)
		}
	}
	for q, want := range map[string]bool{"": false, "a=1&b=2": false, "access_token=x": true, "API_KEY=x": true,
		"q=lk_AbCdEfGhIjKlMnOp_" + strings.Repeat("x", 40): true} {
		if got := edge.CredentialInQuery(q); got != want {
			t.Errorf("CredentialInQuery(%q) = %v", q, got)
		}
	}
}

func TestDeny(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d         latchkey.Decision
		err       error
		status    int
		challenge string
		retry     string
	}{
		{latchkey.Decision{Code: latchkey.NotFound}, nil, 401, `Bearer realm="latchkey", error="invalid_token"`, ""},
		{latchkey.Decision{Code: latchkey.Revoked}, nil, 401, `Bearer realm="latchkey", error="invalid_token"`, ""},
		{latchkey.Decision{Code: latchkey.InsufficientScope}, nil, 403, `Bearer realm="latchkey", error="insufficient_scope"`, ""},
		{latchkey.Decision{Code: latchkey.Blocked}, nil, 403, `Bearer realm="latchkey", error="insufficient_scope"`, ""},
		{latchkey.Decision{Code: latchkey.RateLimited, Rate: latchkey.RateStatus{RetryAfter: 1500 * time.Millisecond}}, nil, 429, "", "2"},
		{latchkey.Decision{Code: latchkey.Valid}, errors.New("store down"), 503, "", "1"},
	} {
		w := httptest.NewRecorder()
		edge.Deny(w, c.d, c.err)
		if w.Code != c.status || w.Header().Get("WWW-Authenticate") != c.challenge || w.Header().Get("Retry-After") != c.retry {
			t.Errorf("Deny(%v, %v) = %d %q %q", c.d.Code, c.err, w.Code, w.Header().Get("WWW-Authenticate"), w.Header().Get("Retry-After"))
		}
		if w.Header().Get("Cache-Control") != "no-store" || strings.Contains(w.Body.String(), "store down") {
			t.Errorf("Deny(%v): headers %v, body %q", c.d.Code, w.Header(), w.Body)
		}
	}
	w := httptest.NewRecorder()
	edge.Challenge(w)
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer realm="latchkey"` {
		t.Errorf("Challenge: %d %v", w.Code, w.Header())
	}
	for d, want := range map[time.Duration]int64{0: 1, time.Nanosecond: 1, time.Second: 1, time.Second + 1: 2, 59 * time.Second: 59} {
		if got := edge.RetryAfter(d); got != want {
			t.Errorf("RetryAfter(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	if tg, reason, _ := edge.CheckTarget("/a/%41", "API.example.com.:8080", h, "x=1"); reason != "" || tg != (edge.Target{Path: "/a/A", Host: "api.example.com"}) {
		t.Errorf("plain request: %+v, %q", tg, reason)
	}
	for _, c := range []struct {
		path, host string
		h          http.Header
		q          string
		reason     string
	}{
		{"/a/..", "h", h, "", edge.ReasonNonCanonical},
		{"/a", "h..", h, "", edge.ReasonBadHost},
		{"/a", "h", http.Header{"X_http_method_override": {"DELETE"}}, "", edge.ReasonMethodOverride},
		{"/a", "h", h, "access_token=x", edge.ReasonCredentialInQuery},
	} {
		_, reason, answer := edge.CheckTarget(c.path, c.host, c.h, c.q)
		if reason != c.reason || !strings.HasPrefix(answer, `{"error":"invalid_request"`) {
			t.Errorf("CheckTarget(%q, %q, %v, %q) = %q %q; want %q", c.path, c.host, c.h, c.q, reason, answer, c.reason)
		}
	}
}
