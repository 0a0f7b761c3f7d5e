package oauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/memsettings"
	"github.com/latchkeyhq/latchkey/secret"
)

func TestPublicAddr(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "93.184.216.34": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "::1": false, "fd00::1": false, "fe80::1": false, "::ffff:127.0.0.1": false,
		"::ffff:10.0.0.1": false, "64:ff9b::a00:1": false, "224.0.0.1": false, "255.255.255.255": false, "198.18.0.1": false,
		"2001:db8::1": false, "192.0.2.1": false, "::": false,
	} {
		if got := PublicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestCheckRedirectURI(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"https://app.example/cb": true, "http://127.0.0.1:8765/cb": true, "http://[::1]/cb": true, "http://localhost:3000/cb": true,
		"com.example.app:/oauth": true, "https://app.example/cb?x=1": true,
		"http://app.example/cb": false, "https://app.example/cb#frag": false, "javascript:alert(1)": false, "data:text/html,x": false,
		"/relative": false, "https://user:pw@app.example/cb": false, "myapp:/cb": false, "https://app.example/c b": false,
		"https://" + strings.Repeat("a", 600) + ".example/": false, "file:///etc/passwd": false, "http://127.0.0.1.evil.example/cb": false,
	} {
		if err := checkRedirectURI(s); (err == nil) != ok {
			t.Errorf("checkRedirectURI(%.60q) = %v, want ok=%v", s, err, ok)
		}
	}
}

func TestCheckDocumentURL(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"https://app.example/client.json": true, "https://app.example/a/b": true,
		"http://app.example/client.json": false, "https://app.example": false, "https://app.example/": false,
		"https://app.example/c#x": false, "https://app.example/c?x=1": false, "https://u@app.example/c": false,
		"https://app.example/a/../c": false, "https://app.example/./c": false,
	} {
		if e := checkDocumentURL(s); (e == nil) != ok {
			t.Errorf("checkDocumentURL(%q) = %v, want ok=%v", s, e, ok)
		}
	}
}

// The fetch is bounded and refuses the inside of the network, whatever
// name leads there.
func TestFetcher(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		id := "https://" + r.Host + r.URL.Path
		switch r.URL.Path {
		case "/good.json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"client_id":%q,"client_name":"Good","redirect_uris":["https://app.example/cb"]}`, id)
		case "/big.json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"client_id":%q,"client_name":"%s","redirect_uris":["https://app.example/cb"]}`, id, strings.Repeat("x", 6000))
		case "/html.json":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `{"client_id":%q,"redirect_uris":["https://app.example/cb"]}`, id)
		case "/moved.json":
			http.Redirect(w, r, "/good.json", http.StatusFound)
		case "/other.json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"client_id":"https://elsewhere.example/c.json","redirect_uris":["https://app.example/cb"]}`)
		case "/secret.json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"client_id":%q,"token_endpoint_auth_method":"client_secret_basic","redirect_uris":["https://app.example/cb"]}`, id)
		case "/slow.json":
			<-release
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ctx := context.Background()
	closed := &Fetcher{RootCAs: pool}
	if _, e := closed.Client(ctx, srv.URL+"/good.json"); e == nil || !strings.Contains(e.Description, "private") {
		t.Fatalf("a loopback document: %v, want refused as private", e)
	}
	if hits.Load() != 0 {
		t.Fatal("the refused fetch reached the server")
	}
	// A name that resolves to loopback is refused too: the check is on
	// the address dialled.
	if _, e := closed.Client(ctx, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/good.json"); e == nil || !strings.Contains(e.Description, "private") {
		t.Fatalf("localhost: %v", e)
	}
	open := &Fetcher{AllowPrivate: true, RootCAs: pool, Timeout: 300 * time.Millisecond}
	c, e := open.Client(ctx, srv.URL+"/good.json")
	if e != nil || c.ClientName != "Good" || c.TokenEndpointAuthMethod != "none" || c.Kind != KindDocument {
		t.Fatalf("the good document: %+v %v", c, e)
	}
	n := hits.Load()
	open.Client(ctx, srv.URL+"/good.json")
	if hits.Load() != n {
		t.Error("a cached document was fetched again")
	}
	for path, want := range map[string]string{
		"/big.json": "larger than", "/html.json": "application/json", "/moved.json": "redirects are not followed",
		"/other.json": "another client_id", "/secret.json": "public client", "/slow.json": "could not be fetched", "/missing.json": "answered 200",
	} {
		if path == "/missing.json" {
			want = "is not application/json"
		}
		if _, e := open.Client(ctx, srv.URL+path); e == nil || e.Code != "invalid_client" || !strings.Contains(e.Description, want) {
			t.Errorf("%s: %v, want invalid_client saying %q", path, e, want)
		}
	}
}

// Fakes for the handler-level tests.

type noTokens struct{}

var errNo = latchkey.Errorf(latchkey.EPermissionDenied, "no")

func (noTokens) Create(context.Context, latchkey.Actor, client.CreateRequest) (*latchkey.Token, secret.Plaintext, error) {
	return nil, secret.Plaintext{}, errNo
}
func (noTokens) Derive(context.Context, latchkey.Actor, string, client.CreateRequest) (*latchkey.Token, secret.Plaintext, error) {
	return nil, secret.Plaintext{}, errNo
}
func (noTokens) Get(context.Context, string) (*latchkey.Token, error) {
	return nil, latchkey.ErrNotFound
}
func (noTokens) Revoke(context.Context, latchkey.Actor, string, string) (*latchkey.Token, error) {
	return nil, errNo
}
func (noTokens) RevokeMatching(context.Context, latchkey.Actor, latchkey.TokenSelector, string, latchkey.BulkOptions) (client.RevocationResult, error) {
	return client.RevocationResult{}, nil
}

type refuseAll struct{}

func (refuseAll) Verify(context.Context, *latchkey.VerifyRequest) (latchkey.Decision, error) {
	return latchkey.Decision{Code: latchkey.NotFound}, nil
}

type records struct {
	mu  sync.Mutex
	evs []latchkey.AuditEvent
}

func (r *records) RecordOn(_ uint64, fill func(ev *latchkey.AuditEvent)) {
	var ev latchkey.AuditEvent
	fill(&ev)
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func testServer(t testing.TB) (*Server, *records) {
	iss, _ := url.Parse("https://auth.example")
	rec := &records{}
	return &Server{Issuer: iss, Verifier: refuseAll{}, Tokens: noTokens{}, Store: &memsettings.Store{}, Audit: rec,
		Resources: func() []string { return []string{"https://mcp.example/mcp/gh"} }}, rec
}

// Whatever arrives at the token endpoint, the answer is a token or an
// RFC 6749 §5.2 error, never a panic, and the attempt is on record.
func FuzzTokenEndpoint(f *testing.F) {
	f.Add("grant_type=authorization_code&code=abc&client_id=lkc_x&code_verifier=" + strings.Repeat("a", 43))
	f.Add("grant_type=refresh_token&refresh_token=lk_x&client_id=lkc_x")
	f.Add("grant_type=client_credentials&client_id=a&client_secret=b&resource=https%3A%2F%2Fmcp.example%2Fmcp%2Fgh")
	f.Add("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token")
	f.Add("grant_type=password&username=a&password=b")
	f.Add("grant_type=a&grant_type=b")
	f.Add("%zz")
	s, rec := testServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", PathToken, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		before := len(rec.evs)
		h.ServeHTTP(w, req)
		if w.Code == 200 {
			t.Fatalf("%q: a token without a valid credential", body)
		}
		var e Error
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code == "" {
			t.Fatalf("%q: %d %q is not an RFC 6749 error", body, w.Code, w.Body.String())
		}
		if len(rec.evs) == before {
			t.Fatalf("%q: not on record", body)
		}
	})
}

// Whatever the authorization request, the answer is an error page or a
// redirect to a registered URI, never elsewhere.
func FuzzAuthorize(f *testing.F) {
	f.Add("response_type=code&client_id=lkc_test&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=s&code_challenge=" + strings.Repeat("A", 43) + "&code_challenge_method=S256&resource=https%3A%2F%2Fmcp.example%2Fmcp%2Fgh")
	f.Add("client_id=lkc_test&redirect_uri=https%3A%2F%2Fevil.example%2Fcb")
	f.Add("client_id=https%3A%2F%2F127.0.0.1%2Fc.json")
	f.Add("response_type=token&client_id=lkc_test&redirect_uri=https%3A%2F%2Fapp.example%2Fcb")
	s, _ := testServer(f)
	c := client.OAuthClient{ClientID: "lkc_test", RedirectURIs: []string{"https://app.example/cb"}, TokenEndpointAuthMethod: "none",
		GrantTypes: []string{GrantCode, GrantRefresh}, Kind: KindRegistered}
	s.putClient(context.Background(), c)
	s.Metadata = &Fetcher{Timeout: 50 * time.Millisecond}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "/x", nil)
		req.URL.Path, req.URL.RawQuery = PathAuthorize, query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusSeeOther:
			loc := w.Header().Get("Location")
			if !strings.HasPrefix(loc, "https://app.example/cb?") && !strings.HasPrefix(loc, "https://auth.example"+ConsentPage) {
				t.Fatalf("%q: redirected to %q", query, loc)
			}
		case http.StatusBadRequest, http.StatusUnauthorized:
			if w.Header().Get("Location") != "" || !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") {
				t.Fatalf("%q: an error page with %v", query, w.Header())
			}
		default:
			t.Fatalf("%q: %d", query, w.Code)
		}
	})
}
