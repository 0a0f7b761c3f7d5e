package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latchkeyhq/latchkey/client"
)

// Defaults for the zero fields of Fetcher.
const (
	DefaultDocumentBytes   = 5 << 10 // the size the draft recommends servers accept
	DefaultDocumentTimeout = 5 * time.Second
	DefaultDocumentCache   = 5 * time.Minute
	maxCachedDocuments     = 1024
)

// Fetcher fetches Client ID Metadata Documents
// (draft-ietf-oauth-client-id-metadata-document): a client_id that is an
// https URL names a JSON document describing the client. The fetch is an
// attacker's to aim, so it is bounded in size and time, follows no
// redirect, uses no proxy, and connects to no private, loopback,
// link-local or otherwise non-public address: the check is made on the
// address actually dialled, after DNS, so a name that resolves (or
// re-resolves) inward is refused too. Its zero value works.
type Fetcher struct {
	// AllowPrivate lets documents live on private and loopback
	// addresses. For tests only: it opens the fetch to the inside.
	AllowPrivate bool
	// RootCAs replaces the system roots (tests).
	RootCAs *x509.CertPool
	// MaxBytes (default 5 KiB), Timeout (default 5 s), CacheTTL (how long
	// a fetched document is reused; default 5 min).
	MaxBytes int64
	Timeout  time.Duration
	CacheTTL time.Duration
	Now      func() time.Time

	once   sync.Once
	client *http.Client
	mu     sync.Mutex
	cache  map[string]cachedDoc
}

type cachedDoc struct {
	c   client.OAuthClient
	exp time.Time
}

// errPrivate is the dial refused for a non-public address.
var errPrivate = errors.New("the address is not public")

func (s *Server) fetcher() *Fetcher {
	if s.Metadata != nil {
		return s.Metadata
	}
	return defaultFetcher
}

var defaultFetcher = &Fetcher{}

func (f *Fetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *Fetcher) init() {
	f.once.Do(func() {
		d := &net.Dialer{Timeout: durOr(f.Timeout, DefaultDocumentTimeout), Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || (!f.AllowPrivate && !PublicAddr(ap.Addr())) {
				return errPrivate
			}
			return nil
		}}
		tr := &http.Transport{
			Proxy: nil, DialContext: d.DialContext, ForceAttemptHTTP2: true,
			TLSClientConfig:     &tls.Config{RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: durOr(f.Timeout, DefaultDocumentTimeout), ResponseHeaderTimeout: durOr(f.Timeout, DefaultDocumentTimeout),
			MaxResponseHeaderBytes: 16 << 10, DisableCompression: true, MaxIdleConns: 8, IdleConnTimeout: 30 * time.Second,
		}
		f.client = &http.Client{Transport: tr, Timeout: durOr(f.Timeout, DefaultDocumentTimeout),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		f.cache = map[string]cachedDoc{}
	})
}

// PublicAddr reports whether a is a public unicast address: not
// loopback, private (RFC 1918, fc00::/7), link-local, multicast,
// unspecified, shared (100.64.0.0/10), benchmarking, documentation or
// reserved space, nor an IPv4 address hidden in IPv6.
func PublicAddr(a netip.Addr) bool {
	if a.Is4In6() {
		a = a.Unmap()
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "240.0.0.0/4", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16", "fec0::/10"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// checkDocumentURL applies the draft's rules to a client_id URL.
func checkDocumentURL(id string) *Error {
	u, err := url.Parse(id)
	bad := func(why string) *Error {
		return oerr("invalid_client", "client_id %.100q is not a valid client metadata document URL: %s", id, why)
	}
	switch {
	case err != nil || u.Scheme != "https" || u.Host == "":
		return bad("it must be an https URL")
	case u.Path == "" || u.Path == "/":
		return bad("it must have a path")
	case u.Fragment != "" || strings.Contains(id, "#"):
		return bad("it must not have a fragment")
	case u.User != nil:
		return bad("it must not hold user information")
	case u.RawQuery != "":
		return bad("it must not have a query")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return bad("it must not have dot segments")
		}
	}
	return nil
}

// Client fetches (or reuses) the document at id and returns the client it
// describes.
func (f *Fetcher) Client(ctx context.Context, id string) (client.OAuthClient, *Error) {
	if e := checkDocumentURL(id); e != nil {
		return client.OAuthClient{}, e
	}
	f.init()
	now := f.now()
	f.mu.Lock()
	if d, ok := f.cache[id]; ok && now.Before(d.exp) {
		f.mu.Unlock()
		return d.c, nil
	}
	f.mu.Unlock()
	c, e := f.fetch(ctx, id)
	if e != nil {
		return c, e
	}
	f.mu.Lock()
	if len(f.cache) >= maxCachedDocuments {
		for k, d := range f.cache {
			if !now.Before(d.exp) || len(f.cache) >= maxCachedDocuments {
				delete(f.cache, k)
			}
		}
	}
	f.cache[id] = cachedDoc{c: c, exp: now.Add(durOr(f.CacheTTL, DefaultDocumentCache))}
	f.mu.Unlock()
	return c, nil
}

func (f *Fetcher) fetch(ctx context.Context, id string) (client.OAuthClient, *Error) {
	fail := func(format string, args ...any) (client.OAuthClient, *Error) {
		return client.OAuthClient{}, oerr("invalid_client", "the client metadata document "+format, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, durOr(f.Timeout, DefaultDocumentTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return fail("URL does not parse")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		if errors.Is(err, errPrivate) {
			return fail("is on a private or loopback address; it must be on the public internet")
		}
		return fail("could not be fetched")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("answered %d (redirects are not followed)", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return fail("is not application/json")
	}
	max := f.MaxBytes
	if max <= 0 {
		max = DefaultDocumentBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return fail("could not be read")
	}
	if int64(len(body)) > max {
		return fail("is larger than %d bytes", max)
	}
	var m registration
	if err := json.Unmarshal(body, &m); err != nil {
		return fail("is not a JSON object")
	}
	if m.ClientID != id {
		return fail("names another client_id (%.100q); it must be its own URL", m.ClientID)
	}
	c, e := m.check(true)
	if e != nil {
		return fail("is invalid: %s", e.Description)
	}
	c.ClientID, c.Kind = id, KindDocument
	return c, nil
}
