package edge

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Addr is where a request comes from.
type Addr struct {
	// IP is the end client's address as text: the peer's, or the one a
	// trusted proxy reports in X-Forwarded-For. It is checked against a
	// token's allowed_cidrs and kept in the audit record.
	IP string
	// Source is the same address as a blockable source: the one the
	// detector counts failures against. It is invalid when the address is
	// a trusted proxy's (a proxy relays everyone's requests and is never
	// blocked on its own account).
	Source netip.Addr
	// Forwarded reports that IP came from a trusted proxy's header rather
	// than being the connection's peer.
	Forwarded bool
}

// ClientAddr resolves the end client of r through the trusted proxies tp.
func ClientAddr(r *http.Request, tp latchkey.TrustedProxies) Addr {
	peer := PeerAddr(r)
	if !peer.IsValid() {
		return Addr{IP: RemoteHost(r)}
	}
	a := tp.ClientIP(peer, r.Header.Values("X-Forwarded-For"))
	if !a.IsValid() {
		return Addr{IP: RemoteHost(r)}
	}
	out := Addr{IP: a.String(), Forwarded: a != peer}
	if !tp.Trusts(a) {
		out.Source = a
	}
	return out
}

// PeerAddr is the connection's peer (an IPv4-mapped address unmapped),
// invalid when r.RemoteAddr is not an address and port.
func PeerAddr(r *http.Request) netip.Addr { return peerOf(r.RemoteAddr) }

func peerOf(remoteAddr string) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// PeerSource is the connection's peer as a blockable source: invalid when
// it is a trusted proxy.
func PeerSource(r *http.Request, tp latchkey.TrustedProxies) netip.Addr {
	return sourceOf(PeerAddr(r), tp)
}

func sourceOf(peer netip.Addr, tp latchkey.TrustedProxies) netip.Addr {
	if !peer.IsValid() || tp.Trusts(peer) {
		return netip.Addr{}
	}
	return peer
}

// RemoteHost is r.RemoteAddr without its port, or whole when it has none.
func RemoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Credential extracts the presented token: from header when one is
// configured (e.g. X-API-Key) and present, else from "Authorization:
// Bearer".
func Credential(r *http.Request, header string) (string, bool) {
	if header != "" {
		if v := strings.TrimSpace(r.Header.Get(header)); v != "" {
			return v, true
		}
	}
	return Bearer(r)
}

// Bearer extracts the token from "Authorization: Bearer <token>" (the
// scheme in any case, RFC 9110 §11.1).
func Bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// CredentialInQuery reports whether a query string carries something that
// looks like a credential: such URLs end up in logs, browser history and
// Referer headers, so the request is refused (ReasonCredentialInQuery).
func CredentialInQuery(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	for _, kv := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "token", "access_token", "api_key", "apikey", "key", "auth", "bearer":
			return true
		}
		if secret.LooksLikeToken(v) || secret.LooksLikeToken(k) {
			return true
		}
	}
	return false
}

// ConnAddr is the peer of a raw connection (a door that is not HTTP: the
// database gateway), with no forwarding header to consult: a trusted
// proxy's address is kept as IP but is never a blockable Source.
func ConnAddr(c net.Conn, tp latchkey.TrustedProxies) Addr {
	remote := c.RemoteAddr().String()
	peer := peerOf(remote)
	if !peer.IsValid() {
		return Addr{IP: remote}
	}
	return Addr{IP: peer.String(), Source: sourceOf(peer, tp)}
}
