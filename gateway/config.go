package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/latchkeyhq/latchkey"
)

// Config is the gateway's YAML file.
//
//	token_header: X-API-Key        # besides Authorization: Bearer (optional)
//	routes:
//	  - name: projects             # the identity JWT's aud
//	    host: api.example.com      # optional; any host when empty
//	    path: /v1/projects/{id}    # prefix, segment by segment; {name} is a parameter
//	    methods: [GET, POST]       # optional; any method when empty
//	    upstream: http://127.0.0.1:9001
//	    scopes: ["projects.{id}:read"]
//	    strip_prefix: false        # drop the matched prefix before forwarding
//	    resource: https://api.example.com/projects  # RFC 8707 resource: tokens bound to it work here (optional)
//	    timeout: 30s               # whole request, upstream included (0: none)
//	    body_timeout: 30s          # the client's whole body must arrive in this time (default 30s)
//	    max_body_bytes: 10MiB      # larger bodies are refused with 413 (default: no limit)
//	    max_header_bytes: 8KiB     # larger headers are refused with 431 (default: the listener's 16 KiB)
//	transport:
//	  max_idle_conns_per_host: 256
//	  idle_conn_timeout: 90s
//	  response_header_timeout: 60s
type Config struct {
	TokenHeader string          `yaml:"token_header"`
	Routes      []RouteConfig   `yaml:"routes"`
	Transport   TransportConfig `yaml:"transport"`
	// MCP is the MCP gateway's section (package mcpgate reads it).
	MCP yaml.Node `yaml:"mcp"`
}

// RouteConfig is one route as written.
type RouteConfig struct {
	Name        string   `yaml:"name"`
	Host        string   `yaml:"host"`
	Path        string   `yaml:"path"`
	Methods     []string `yaml:"methods"`
	Upstream    string   `yaml:"upstream"`
	Scopes      []string `yaml:"scopes"`
	StripPrefix bool     `yaml:"strip_prefix"`
	// Resource is the route's RFC 8707 resource indicator: a token bound
	// to an audience (one the OAuth authorization server issued) works
	// on the route only when the audience names it.
	Resource string `yaml:"resource"`
	// Keyspace is the keyspace whose tokens the route accepts (default:
	// the default keyspace); any other keyspace's token is NOT_FOUND.
	Keyspace string `yaml:"keyspace"`
	Timeout  string `yaml:"timeout"`
	// BodyTimeout bounds how long the client may take to send its body,
	// counted from the end of its headers (default 30s), so a slow or
	// stalled body cannot hold a connection. Upgrades (websockets) have
	// no body and are not bounded by it.
	BodyTimeout    string `yaml:"body_timeout"`
	MaxBodyBytes   string `yaml:"max_body_bytes"`
	MaxHeaderBytes string `yaml:"max_header_bytes"`
}

// TransportConfig tunes the connection pool to the upstreams.
type TransportConfig struct {
	MaxIdleConnsPerHost   int    `yaml:"max_idle_conns_per_host"`
	IdleConnTimeout       string `yaml:"idle_conn_timeout"`
	ResponseHeaderTimeout string `yaml:"response_header_timeout"`
}

// LoadConfig reads and checks a gateway file. Every problem is reported
// with the route it is in.
func LoadConfig(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(b)
}

// ParseConfig checks a gateway file's text and compiles its routes.
func ParseConfig(b []byte) (*Table, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("gateway config: %v", err)
	}
	return compile(c)
}

func compile(c Config) (*Table, error) {
	t := &Table{TokenHeader: http.CanonicalHeaderKey(strings.TrimSpace(c.TokenHeader))}
	if t.TokenHeader != "" && (strings.HasPrefix(strings.ToLower(t.TokenHeader), "x-latchkey-") || strings.ContainsAny(t.TokenHeader, " :")) {
		return nil, fmt.Errorf("gateway config: token_header %q cannot be used", c.TokenHeader)
	}
	if len(c.Routes) == 0 && c.MCP.Kind == 0 {
		return nil, fmt.Errorf("gateway config: no routes (and no mcp section)")
	}
	names := map[string]bool{}
	for i, rc := range c.Routes {
		r, err := compileRoute(rc)
		if err != nil {
			return nil, fmt.Errorf("gateway config: route %d (%s): %v", i+1, rc.Name, err)
		}
		if names[r.Name] {
			return nil, fmt.Errorf("gateway config: route name %q is used twice", r.Name)
		}
		names[r.Name] = true
		t.Routes = append(t.Routes, r)
	}
	tr := c.Transport
	t.Transport.MaxIdleConnsPerHost = tr.MaxIdleConnsPerHost
	if t.Transport.MaxIdleConnsPerHost == 0 {
		t.Transport.MaxIdleConnsPerHost = 256
	}
	if t.Transport.MaxIdleConnsPerHost < 0 {
		return nil, fmt.Errorf("gateway config: transport.max_idle_conns_per_host must be positive")
	}
	var err error
	if t.Transport.IdleConnTimeout, err = latchkey.ParseDurationSetting(tr.IdleConnTimeout, 90*time.Second); err != nil {
		return nil, fmt.Errorf("gateway config: transport.idle_conn_timeout: %v", err)
	}
	if t.Transport.IdleConnTimeout <= 0 {
		// A reload retires the old pool by this timeout: it must have one.
		return nil, fmt.Errorf("gateway config: transport.idle_conn_timeout must be positive")
	}
	if t.Transport.ResponseHeaderTimeout, err = latchkey.ParseDurationSetting(tr.ResponseHeaderTimeout, 60*time.Second); err != nil {
		return nil, fmt.Errorf("gateway config: transport.response_header_timeout: %v", err)
	}
	return t, nil
}

// DefaultBodyTimeout is a route's body_timeout when the file gives none:
// the API's own read timeout.
const DefaultBodyTimeout = 30 * time.Second

// optBytes reads a size (latchkey.ParseSize); empty is 0 (no limit).
func optBytes(s string) (int64, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	return latchkey.ParseSize(s)
}

func compileRoute(rc RouteConfig) (*Route, error) {
	r := &Route{Name: rc.Name, Host: strings.ToLower(rc.Host), StripPrefix: rc.StripPrefix, Resource: rc.Resource, Keyspace: rc.Keyspace}
	if r.Name == "" {
		return nil, fmt.Errorf("name is required (it is the identity's audience)")
	}
	if rc.Keyspace != "" {
		if err := latchkey.ValidateName("keyspace", rc.Keyspace); err != nil {
			return nil, errors.New(latchkey.ErrorMessage(err))
		}
	}
	if rc.Resource != "" {
		if err := latchkey.ValidateResource(rc.Resource); err != nil {
			return nil, errors.New(latchkey.ErrorMessage(err))
		}
	}
	if !strings.HasPrefix(rc.Path, "/") {
		return nil, fmt.Errorf("path must start with /")
	}
	params := map[string]bool{}
	for _, seg := range strings.Split(strings.Trim(rc.Path, "/"), "/") {
		if seg == "" {
			continue
		}
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := seg[1 : len(seg)-1]
			if name == "" || strings.ContainsAny(name, "{}") {
				return nil, fmt.Errorf("path parameter %q is malformed", seg)
			}
			params[name] = true
		} else if strings.ContainsAny(seg, "{}*") {
			return nil, fmt.Errorf("path segment %q: a parameter is a whole segment, {name}", seg)
		}
		r.segs = append(r.segs, seg)
	}
	for _, m := range rc.Methods {
		r.Methods = append(r.Methods, strings.ToUpper(m))
	}
	u, err := url.Parse(rc.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q must be an http:// or https:// URL", rc.Upstream)
	}
	r.Upstream = u
	for _, sc := range rc.Scopes {
		// Substitute a sample value for each parameter to validate.
		probe := sc
		for p := range params {
			probe = strings.ReplaceAll(probe, "{"+p+"}", "x")
		}
		if strings.ContainsAny(probe, "{}") {
			return nil, fmt.Errorf("scope %q names a parameter the path does not have", sc)
		}
		if err := latchkey.ValidateScope(probe); err != nil {
			return nil, fmt.Errorf("scope %q: %s", sc, latchkey.ErrorMessage(err))
		}
		r.Scopes = append(r.Scopes, sc)
	}
	if r.Timeout, err = latchkey.ParseDurationSetting(rc.Timeout, 0); err != nil {
		return nil, fmt.Errorf("timeout: %v", err)
	}
	if r.BodyTimeout, err = latchkey.ParseDurationSetting(rc.BodyTimeout, DefaultBodyTimeout); err != nil || r.BodyTimeout <= 0 {
		return nil, fmt.Errorf("body_timeout: must be a positive duration")
	}
	if r.MaxBodyBytes, err = optBytes(rc.MaxBodyBytes); err != nil {
		return nil, fmt.Errorf("max_body_bytes: %v", err)
	}
	if r.MaxHeaderBytes, err = optBytes(rc.MaxHeaderBytes); err != nil {
		return nil, fmt.Errorf("max_header_bytes: %v", err)
	}
	return r, nil
}
