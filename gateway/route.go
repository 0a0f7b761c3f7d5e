package gateway

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Table is a compiled gateway configuration.
type Table struct {
	TokenHeader string
	Routes      []*Route
	Transport   struct {
		MaxIdleConnsPerHost   int
		IdleConnTimeout       time.Duration
		ResponseHeaderTimeout time.Duration
	}
}

// Route is one compiled route.
type Route struct {
	Name        string
	Host        string // lower case; "" matches any
	Methods     []string
	Upstream    *url.URL
	Scopes      []string // may hold {param}
	StripPrefix bool
	// Resource is the route's RFC 8707 resource indicator ("": none, so
	// tokens bound to an audience are refused here).
	Resource string
	// Keyspace is the keyspace whose tokens the route accepts ("": the
	// default keyspace).
	Keyspace string
	Timeout  time.Duration
	// BodyTimeout bounds the arrival of the client's body after its
	// headers; MaxBodyBytes and MaxHeaderBytes cap their sizes (0: no
	// cap beyond the listener's).
	BodyTimeout    time.Duration
	MaxBodyBytes   int64
	MaxHeaderBytes int64

	segs []string // path prefix segments; "{name}" is a parameter
}

// Match is a route that matched a request, with its parameters.
type Match struct {
	Route  *Route
	params []string // name, value pairs
	prefix int      // bytes of the path the prefix covered
}

// Scopes returns the route's required scopes with parameters filled in.
// A parameter value that is not a plain scope segment makes ok false: it
// could otherwise widen or reshape the scope ("*", "a.b", "x:y").
func (m *Match) Scopes() (scopes []string, ok bool) {
	for i := 1; i < len(m.params); i += 2 {
		if !plainSegment(m.params[i]) {
			return nil, false
		}
	}
	out := make([]string, 0, len(m.Route.Scopes))
	for _, sc := range m.Route.Scopes {
		for i := 0; i+1 < len(m.params); i += 2 {
			sc = strings.ReplaceAll(sc, "{"+m.params[i]+"}", m.params[i+1])
		}
		out = append(out, sc)
	}
	return out, true
}

func plainSegment(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Lookup finds the route for host, method and path: among the routes whose
// host and methods match, the one with the longest path prefix (the first
// in the file on a tie).
func (t *Table) Lookup(host, method, path string) (Match, bool) {
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.ToLower(host) // no copy when it is lower case already
	var best Match
	found := false
	for _, r := range t.Routes {
		if r.Host != "" && r.Host != host {
			continue
		}
		if len(r.Methods) > 0 && !contains(r.Methods, method) {
			continue
		}
		m, ok := r.match(path)
		if !ok {
			continue
		}
		if !found || len(r.segs) > len(best.Route.segs) {
			best, found = m, true
		}
	}
	return best, found
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// match reports whether path starts with the route's prefix, segment by
// segment, and captures parameters.
func (r *Route) match(path string) (Match, bool) {
	m := Match{Route: r}
	rest := strings.TrimPrefix(path, "/")
	consumed := 1
	for _, seg := range r.segs {
		if rest == "" {
			return m, false
		}
		v, tail, more := strings.Cut(rest, "/")
		if strings.HasPrefix(seg, "{") {
			if v == "" {
				return m, false
			}
			m.params = append(m.params, seg[1:len(seg)-1], v)
		} else if seg != v {
			return m, false
		}
		consumed += len(v)
		if more {
			consumed++
		}
		rest = tail
	}
	if len(r.segs) == 0 {
		consumed = 0
	}
	m.prefix = min(consumed, len(path))
	return m, true
}

// upstreamPath is the path to send upstream: the request's, or with the
// matched prefix removed.
func (m *Match) upstreamPath(path string) string {
	if !m.Route.StripPrefix {
		return path
	}
	rest := path[m.prefix:]
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return rest
}

// transport builds the upstream transport: keep-alive pools sized for a
// proxy (the default of 2 idle connections per host would make most
// requests open a new connection under load).
func (t *Table) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0 // no overall cap: per host below
	tr.MaxIdleConnsPerHost = t.Transport.MaxIdleConnsPerHost
	tr.IdleConnTimeout = t.Transport.IdleConnTimeout
	tr.ResponseHeaderTimeout = t.Transport.ResponseHeaderTimeout
	tr.ForceAttemptHTTP2 = false // plain HTTP/1.1 upstreams; websockets need it
	return tr
}

// TransportFor is the upstream transport the gateway builds for t, for a
// baseline proxy that should match it exactly.
func TransportFor(t *Table) *http.Transport { return t.transport() }
