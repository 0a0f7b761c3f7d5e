package mcpgate

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/latchkeyhq/latchkey"
)

// Config is the "mcp:" section of the route file (latchkey serve
// --gateway-config, latchkey gateway --config).
//
//	mcp:
//	  public_url: https://gw.example.com   # how clients reach the gateway (default: from the request)
//	  authorization_servers: []            # for the RFC 9728 document (issuers)
//	  allowed_origins: []                  # browser origins besides the gateway's own (Origin is checked when sent)
//	  approval_timeout: 5m                 # a held call is denied after this
//	  max_message_bytes: 4MiB              # a larger client message is refused (413)
//	  max_sessions: 1000                   # open sessions at once, all servers (0: no limit)
//	  call_timeout: 5m                     # one request's whole time upstream
//	  session_idle_timeout: 30m            # a session with no request nor open stream this long is ended
//	  servers:
//	    - name: github                     # served at /mcp/github; scopes mcp.github.*
//	      url: http://127.0.0.1:9000/mcp   # an upstream over Streamable HTTP
//	      headers: {Authorization: "Bearer ..."}  # sent to the upstream only
//	    - name: files
//	      command: [/usr/local/bin/files-mcp, --root, /srv]  # a stdio server, one process per session
//	      env: {LOG_LEVEL: info}           # its environment (nothing else is inherited but PATH and HOME)
//	      approval: [delete_*, send_email] # calls to these tools wait for a human
//	      record_arguments: false          # keep (redacted) argument values in the audit record
type Config struct {
	PublicURL            string         `yaml:"public_url"`
	AuthorizationServers []string       `yaml:"authorization_servers"`
	AllowedOrigins       []string       `yaml:"allowed_origins"`
	ApprovalTimeout      string         `yaml:"approval_timeout"`
	MaxMessageBytes      string         `yaml:"max_message_bytes"`
	MaxSessions          int            `yaml:"max_sessions"`
	CallTimeout          string         `yaml:"call_timeout"`
	SessionIdleTimeout   string         `yaml:"session_idle_timeout"`
	Servers              []ServerConfig `yaml:"servers"`
}

// ServerConfig is one upstream MCP server.
type ServerConfig struct {
	Name            string            `yaml:"name"`
	URL             string            `yaml:"url"`
	Headers         map[string]string `yaml:"headers"`
	Command         []string          `yaml:"command"`
	Env             map[string]string `yaml:"env"`
	Approval        []string          `yaml:"approval"`
	RecordArguments bool              `yaml:"record_arguments"`
	// Keyspace is the keyspace whose tokens the server accepts (default:
	// the default keyspace).
	Keyspace string `yaml:"keyspace"`
}

// Settings is a checked Config.
type Settings struct {
	PublicURL            *url.URL // nil: from each request
	AuthorizationServers []string
	AllowedOrigins       []string
	ApprovalTimeout      time.Duration
	MaxMessageBytes      int64
	MaxSessions          int
	CallTimeout          time.Duration
	SessionIdleTimeout   time.Duration
	Servers              []*Server
}

// Server is one upstream as the gateway serves it.
type Server struct {
	Name            string
	URL             *url.URL // nil for a stdio server
	Headers         map[string]string
	Command         []string
	Env             []string // KEY=value
	Approval        []string // path.Match patterns over tool names
	RecordArguments bool
	Keyspace        string // "": the default keyspace
	// Resource is the server's resource indicator (RFC 8707) under the
	// configured public URL; "" without one.
	Resource string
}

// Scopes lists the scope families the server answers to.
func (s *Server) Scopes() []string {
	return []string{"mcp." + s.Name + ".tools.*:call", ResourcesScope(s.Name), PromptsScope(s.Name)}
}

// Stdio reports whether the server is a local command.
func (s *Server) Stdio() bool { return s.URL == nil }

// NeedsApproval reports whether a call to tool waits for a human.
func (s *Server) NeedsApproval(tool string) bool {
	for _, p := range s.Approval {
		if ok, _ := path.Match(p, tool); ok {
			return true
		}
	}
	return false
}

// Server returns the server called name.
func (st *Settings) Server(name string) (*Server, bool) {
	for _, s := range st.Servers {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

// Resources lists each server's resource indicator (RFC 8707), the
// audience a token delegated for it carries: public_url + /mcp/<name>.
// Without a public URL there are none: a token bound to an audience is
// accepted only where the gateway's own address is configured.
func (st *Settings) Resources() []string {
	if st.PublicURL == nil {
		return nil
	}
	out := make([]string, 0, len(st.Servers))
	for _, s := range st.Servers {
		out = append(out, s.Resource)
	}
	return out
}

// ScopesSupported lists the scope families the servers answer to.
func (st *Settings) ScopesSupported() []string {
	var out []string
	for _, s := range st.Servers {
		out = append(out, s.Scopes()...)
	}
	return out
}

var serverName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// hopHeaders may not be configured for the upstream: the gateway sets
// them, or they would change how the request is framed.
var hopHeaders = map[string]bool{"Host": true, "Content-Length": true, "Content-Type": true, "Transfer-Encoding": true,
	"Connection": true, "Accept": true, "Mcp-Session-Id": true, "Mcp-Protocol-Version": true, "Last-Event-Id": true}

// ParseConfig reads the "mcp:" section of a route file's text. ok is
// false when the file has none.
func ParseConfig(b []byte) (st *Settings, ok bool, err error) {
	var file struct {
		MCP  *Config              `yaml:"mcp"`
		Rest map[string]yaml.Node `yaml:",inline"` // the HTTP gateway's part
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil && err != io.EOF {
		return nil, false, fmt.Errorf("mcp config: %v", err)
	}
	if file.MCP == nil {
		return nil, false, nil
	}
	st, err = compile(*file.MCP)
	return st, true, err
}

// LoadConfig reads the route file at p; ok is false when it has no "mcp:".
func LoadConfig(p string) (*Settings, bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false, err
	}
	return ParseConfig(b)
}

func compile(c Config) (*Settings, error) {
	st := &Settings{MaxSessions: c.MaxSessions, AuthorizationServers: c.AuthorizationServers}
	fail := func(f string, a ...any) (*Settings, error) { return nil, fmt.Errorf("mcp config: "+f, a...) }
	if c.PublicURL != "" {
		u, err := url.Parse(strings.TrimSuffix(c.PublicURL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fail("public_url %q must be an http:// or https:// URL without query", c.PublicURL)
		}
		st.PublicURL = u
	}
	for _, as := range c.AuthorizationServers {
		if u, err := url.Parse(as); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			return fail("authorization_servers: %q is not an issuer URL", as)
		}
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fail("allowed_origins: %q is not an origin (scheme://host[:port])", o)
		}
		st.AllowedOrigins = append(st.AllowedOrigins, strings.TrimSuffix(o, "/"))
	}
	if st.MaxSessions < 0 {
		return fail("max_sessions must not be negative")
	}
	var err error
	if st.ApprovalTimeout, err = latchkey.ParseDurationSetting(c.ApprovalTimeout, 5*time.Minute); err != nil || st.ApprovalTimeout <= 0 {
		return fail("approval_timeout must be a positive duration")
	}
	if st.CallTimeout, err = latchkey.ParseDurationSetting(c.CallTimeout, 5*time.Minute); err != nil || st.CallTimeout <= 0 {
		return fail("call_timeout must be a positive duration")
	}
	if st.SessionIdleTimeout, err = latchkey.ParseDurationSetting(c.SessionIdleTimeout, 30*time.Minute); err != nil || st.SessionIdleTimeout <= 0 {
		return fail("session_idle_timeout must be a positive duration")
	}
	st.MaxMessageBytes = 4 << 20
	if strings.TrimSpace(c.MaxMessageBytes) != "" {
		if st.MaxMessageBytes, err = latchkey.ParseSize(c.MaxMessageBytes); err != nil || st.MaxMessageBytes < 1024 {
			return fail("max_message_bytes must be a size of at least 1KiB")
		}
	}
	if len(c.Servers) == 0 {
		return fail("no servers")
	}
	for i, sc := range c.Servers {
		s, err := compileServer(sc)
		if err != nil {
			return fail("server %d (%s): %v", i+1, sc.Name, err)
		}
		if _, dup := st.Server(s.Name); dup {
			return fail("server name %q is used twice", s.Name)
		}
		if st.PublicURL != nil {
			s.Resource = st.PublicURL.String() + "/mcp/" + s.Name
		}
		st.Servers = append(st.Servers, s)
	}
	return st, nil
}

func compileServer(sc ServerConfig) (*Server, error) {
	s := &Server{Name: sc.Name, Command: sc.Command, RecordArguments: sc.RecordArguments, Headers: map[string]string{}, Keyspace: sc.Keyspace}
	if sc.Keyspace != "" {
		if err := latchkey.ValidateName("keyspace", sc.Keyspace); err != nil {
			return nil, fmt.Errorf("mcp server %q: %s", sc.Name, latchkey.ErrorMessage(err))
		}
	}
	if !serverName.MatchString(s.Name) {
		return nil, fmt.Errorf("name must be 1 to 63 of [a-z0-9_-], starting with a letter or digit (it is a scope segment: mcp.<name>.…)")
	}
	switch {
	case sc.URL != "" && len(sc.Command) > 0:
		return nil, fmt.Errorf("give url or command, not both")
	case sc.URL != "":
		u, err := url.Parse(sc.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			return nil, fmt.Errorf("url %q must be an http:// or https:// URL", sc.URL)
		}
		s.URL = u
		if len(sc.Env) > 0 {
			return nil, fmt.Errorf("env is for a command")
		}
	case len(sc.Command) > 0:
		if sc.Command[0] == "" {
			return nil, fmt.Errorf("command is empty")
		}
		if len(sc.Headers) > 0 {
			return nil, fmt.Errorf("headers are for a url")
		}
		for k, v := range sc.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				return nil, fmt.Errorf("env %q is not a variable name", k)
			}
			s.Env = append(s.Env, k+"="+v)
		}
	default:
		return nil, fmt.Errorf("url or command is required")
	}
	for k, v := range sc.Headers {
		ck := canonicalHeader(k)
		if ck == "" || hopHeaders[ck] || strings.HasPrefix(ck, "X-Latchkey-") || strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("header %q cannot be set", k)
		}
		s.Headers[ck] = v
	}
	for _, p := range sc.Approval {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return nil, fmt.Errorf("approval pattern %q is malformed", p)
		}
		s.Approval = append(s.Approval, p)
	}
	return s, nil
}

func canonicalHeader(k string) string {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return ""
		}
	}
	if k == "" {
		return ""
	}
	parts := strings.Split(strings.ToLower(k), "-")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}
