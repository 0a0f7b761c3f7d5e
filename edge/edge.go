// Package edge is what every door of latchkey checks and answers before
// and after it asks for a decision: the API, the gateway, forward auth,
// the middleware, and the gateways to come. The checks are written once,
// here, because two copies drift and the drift is where bypasses live.
//
// A request that fails a check is refused (and recorded, outcome REFUSED,
// with one of the Reason constants), whatever its token would allow:
//   - the path must be canonical (CanonicalPath), the host plain
//     (CanonicalHost), and no method-override header may be present;
//   - no credential may ride in the URL (CredentialInQuery);
//   - no header an upstream would read as latchkey's word may come from
//     the client (IsIdentityHeader, StripIdentity).
//
// ClientAddr resolves the end client through the trusted proxies,
// Credential reads the presented token, and Deny answers a refused
// decision (401, 403, 429 with RFC 6750 challenges and Retry-After).
// NewServer is the one http.Server constructor, so that no listener is
// left without timeouts.
package edge

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Reasons for an edge refusal, as recorded in the audit log.
const (
	ReasonNoCredential      = "no_credential"
	ReasonCredentialInQuery = "credential_in_query"
	ReasonNoRoute           = "no_route"
	ReasonNonCanonical      = "non_canonical_path"
	ReasonBadHost           = "bad_host"
	ReasonMethodOverride    = "method_override"
	ReasonIdentityHeader    = "identity_header"
	ReasonForwardedHeaders  = "forwarded_headers"
	ReasonHeaderTooLarge    = "header_too_large"
	ReasonBadScope          = "bad_scope"    // a ?scope= on the forward-auth URL is not a scope
	ReasonBadResource       = "bad_resource" // a ?resource= on the forward-auth URL is not an absolute URL
	ReasonBadKeyspace       = "bad_keyspace" // a ?keyspace= on the forward-auth URL is not a keyspace name
)

// CanonicalPath checks an escaped request path (URL.EscapedPath, or the
// path of X-Original-URI) and returns it decoded. It refuses what a
// server behind the door could read as another path than the one
// authorised: dot segments ("." and "..", escaped or not), an escaped
// "/" or "\", a raw "\", ";" path parameters ("..;/" on Tomcat), empty
// segments ("//"), control characters and bad escapes. One trailing "/"
// is allowed. The decoded path passes latchkey.CanonicalPath, the check
// allowed_paths matching relies on.
func CanonicalPath(escaped string) (string, bool) {
	p := escaped
	if strings.IndexByte(escaped, '%') >= 0 {
		segs := strings.Split(escaped, "/")
		for i, seg := range segs {
			d, err := url.PathUnescape(seg)
			// An escaped "/" splits differently upstream; an escaped "%"
			// decodes a second time somewhere.
			if err != nil || strings.ContainsAny(d, "/%") {
				return "", false
			}
			segs[i] = d
		}
		p = strings.Join(segs, "/")
	}
	if !latchkey.CanonicalPath(p) || !plainPathBytes(p) {
		return "", false
	}
	return p, true
}

// plainPathBytes refuses the bytes that change a path's meaning to some
// server: "\" (a separator on Windows and to some frameworks), ";" (path
// parameters), control characters and DEL.
func plainPathBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '\\' || c == ';' {
			return false
		}
	}
	return true
}

// CanonicalHost returns the host a request names, as routes match it:
// without its port, lower case, and without the one trailing dot of a
// fully qualified name ("admin.example.com." is admin.example.com, and
// must not escape that host's route). Anything that is not a plain host
// name or address is refused.
func CanonicalHost(host string) (string, bool) {
	if strings.IndexByte(host, ':') >= 0 { // a port, or an IPv6 literal
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return "", false
	}
	if strings.Contains(host, ":") { // an IPv6 literal
		if ip := net.ParseIP(host); ip == nil {
			return "", false
		}
		return host, true
	}
	label := 0 // length of the label so far
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_':
			if label++; label > 63 {
				return "", false
			}
		default:
			return "", false
		}
	}
	return host, label > 0
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// methodOverrideHeaders make some frameworks treat a request as another
// method than the one authorised.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// MethodOverride reports whether h carries a method-override header, in
// any spelling ("_" for "-" included).
func MethodOverride(h http.Header) bool {
	for k := range h {
		n := normalHeader(k)
		for _, m := range methodOverrideHeaders {
			if strings.EqualFold(n, m) {
				return true
			}
		}
	}
	return false
}

// IsIdentityHeader reports whether a header name is one an upstream could
// read as latchkey's word: any X-Latchkey-* header, or the configured
// token header, spelled with "-" or "_" (CGI and WSGI map both to the
// same variable, HTTP_X_LATCHKEY_SUBJECT).
func IsIdentityHeader(name, tokenHeader string) bool {
	n := normalHeader(name)
	if len(n) > 11 && strings.EqualFold(n[:11], "X-Latchkey-") {
		return true
	}
	return tokenHeader != "" && strings.EqualFold(n, normalHeader(tokenHeader))
}

// StripIdentity removes every identity header (IsIdentityHeader) from h:
// a client must never be able to claim an identity.
func StripIdentity(h http.Header, tokenHeader string) {
	for k := range h {
		if IsIdentityHeader(k, tokenHeader) {
			delete(h, k)
		}
	}
}

// normalHeader spells a header name with "-" for "_".
func normalHeader(k string) string {
	if strings.IndexByte(k, '_') < 0 {
		return k
	}
	return strings.ReplaceAll(k, "_", "-")
}

// RequestID returns the caller's X-Request-Id when it is short and plain
// (at most 64 of [A-Za-z0-9._-], and not shaped like a token), else a
// fresh random one: the id is kept in the audit record, which must hold
// neither junk nor a secret pasted into the header.
func RequestID(h http.Header) string {
	if id := PlainRequestID(h); id != "" {
		return id
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PlainRequestID is the caller's X-Request-Id when ValidRequestID, else
// "": the doors keep a caller's id in their records, and none of their
// own (a proxy in front has its own logs to match).
func PlainRequestID(h http.Header) string {
	if id := h.Get("X-Request-Id"); ValidRequestID(id) {
		return id
	}
	return ""
}

// ValidRequestID reports whether a caller's request id can be kept.
func ValidRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return !secret.LooksLikeToken(s)
}

// HeaderBytes is the size of h as it came on the wire, roughly: names,
// values and separators.
func HeaderBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
