package pggate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/latchkeyhq/latchkey"
)

// Config is the database gateway's YAML file (latchkey serve --db-config).
//
//	listen: 127.0.0.1:6432             # where clients connect (default)
//	tls:                               # offered on SSLRequest; default: the server's --tls-cert/--tls-key
//	  cert: /etc/latchkey/db.crt
//	  key: /etc/latchkey/db.key
//	allow_cleartext_password: false    # take tokens without TLS from non-loopback clients (never do this)
//	statement_text_limit: 4096         # bytes of statement text kept in an audit record
//	log_parameters: false              # keep bound parameter values in the audit record
//	max_message_bytes: 64MiB           # larger client messages end the session
//	startup_timeout: 10s               # a client must be authenticated within this
//	connect_timeout: 10s               # reaching the upstream
//	max_sessions: 1000                 # open sessions at once (0: no limit)
//	databases:
//	  - name: analytics                # the dbname clients ask for
//	    upstream: 127.0.0.1:5432       # host:port of the real server
//	    database: analytics            # its database (default: name)
//	    sslmode: prefer                # to the upstream: disable, prefer, require, verify-ca, verify-full
//	    resource: https://db.example.com/analytics  # RFC 8707 resource: tokens bound to it open this database (optional)
//	    roles:                         # first one the token's scopes cover wins
//	      - scope: db.analytics:write
//	        user: analytics_rw
//	        password_env: ANALYTICS_RW_PASSWORD
//	      - scope: db.analytics:read
//	        user: analytics_ro
//	        password_file: /run/secrets/analytics_ro
type Config struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	AllowCleartextPassword bool             `yaml:"allow_cleartext_password"`
	StatementTextLimit     int              `yaml:"statement_text_limit"`
	LogParameters          bool             `yaml:"log_parameters"`
	MaxMessageBytes        string           `yaml:"max_message_bytes"`
	StartupTimeout         string           `yaml:"startup_timeout"`
	ConnectTimeout         string           `yaml:"connect_timeout"`
	MaxSessions            int              `yaml:"max_sessions"`
	Databases              []DatabaseConfig `yaml:"databases"`
}

// DatabaseConfig is one database as clients see it.
type DatabaseConfig struct {
	Name     string       `yaml:"name"`
	Upstream string       `yaml:"upstream"`
	Database string       `yaml:"database"`
	SSLMode  string       `yaml:"sslmode"`
	Roles    []RoleConfig `yaml:"roles"`
	// Resource is the database's RFC 8707 resource indicator: tokens
	// bound to an audience (those the OAuth authorization server issues)
	// open it only when their audience names it.
	Resource string `yaml:"resource"`
	// Keyspace is the keyspace whose tokens open the database (default:
	// the default keyspace).
	Keyspace string `yaml:"keyspace"`
}

// RoleConfig maps a scope to the upstream login role a session gets.
type RoleConfig struct {
	Scope        string `yaml:"scope"`
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// Settings is a checked Config.
type Settings struct {
	Listen                 string
	TLSCert, TLSKey        string
	AllowCleartextPassword bool
	StatementTextLimit     int
	LogParameters          bool
	MaxMessageBytes        int
	StartupTimeout         time.Duration
	ConnectTimeout         time.Duration
	MaxSessions            int
	Databases              map[string]*Database
}

// Database is one route: where the database is and which role each scope
// gets.
type Database struct {
	Name     string
	Host     string
	Port     uint16
	Database string
	SSLMode  string
	Roles    []Role
	Resource string // "": none, so tokens bound to an audience are refused
	Keyspace string // "": the default keyspace
}

// Role is an upstream login and the scope that grants it. Password is
// never printed (Role has no String with it).
type Role struct {
	Scope    string
	User     string
	password string
}

// String and GoString keep the password out of every fmt verb (%v,
// %+v, %#v, %s).
func (r Role) String() string { return fmt.Sprintf("pggate.Role{Scope:%q, User:%q}", r.Scope, r.User) }

// GoString is String.
func (r Role) GoString() string { return r.String() }

// Defaults.
const (
	DefaultListen             = "127.0.0.1:6432"
	DefaultStatementTextLimit = 4096
	DefaultMaxMessageBytes    = 64 << 20
)

// LoadConfig reads and checks a database gateway file; getenv resolves
// password_env.
func LoadConfig(path string, getenv func(string) string) (*Settings, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("db config: %w", err)
	}
	return ParseConfig(b, getenv)
}

// ParseConfig checks a database gateway file's text.
func ParseConfig(b []byte, getenv func(string) string) (*Settings, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is a file without databases
		return nil, fmt.Errorf("db config: %v", err)
	}
	s, err := compile(c, getenv)
	if err != nil {
		return nil, fmt.Errorf("db config: %v", err)
	}
	return s, nil
}

func compile(c Config, getenv func(string) string) (*Settings, error) {
	s := &Settings{Listen: c.Listen, TLSCert: c.TLS.Cert, TLSKey: c.TLS.Key, AllowCleartextPassword: c.AllowCleartextPassword,
		StatementTextLimit: c.StatementTextLimit, LogParameters: c.LogParameters, MaxSessions: c.MaxSessions,
		Databases: map[string]*Database{}}
	if s.Listen == "" {
		s.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		return nil, fmt.Errorf("listen %q: %v", s.Listen, err)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return nil, fmt.Errorf("tls: cert and key go together")
	}
	switch {
	case s.StatementTextLimit == 0:
		s.StatementTextLimit = DefaultStatementTextLimit
	case s.StatementTextLimit < 0 || s.StatementTextLimit > 1<<20:
		return nil, fmt.Errorf("statement_text_limit must be between 1 and 1048576")
	}
	if s.MaxSessions < 0 {
		return nil, fmt.Errorf("max_sessions must not be negative")
	}
	var err error
	if s.MaxMessageBytes, err = parseBytes(c.MaxMessageBytes, DefaultMaxMessageBytes); err != nil {
		return nil, fmt.Errorf("max_message_bytes: %v", err)
	}
	if s.StartupTimeout, err = optDuration(c.StartupTimeout, 10*time.Second); err != nil {
		return nil, fmt.Errorf("startup_timeout: %v", err)
	}
	if s.ConnectTimeout, err = optDuration(c.ConnectTimeout, 10*time.Second); err != nil {
		return nil, fmt.Errorf("connect_timeout: %v", err)
	}
	if len(c.Databases) == 0 {
		return nil, fmt.Errorf("no databases")
	}
	for i, dc := range c.Databases {
		d, err := compileDatabase(dc, getenv)
		if err != nil {
			return nil, fmt.Errorf("database %d (%s): %v", i+1, dc.Name, err)
		}
		if s.Databases[d.Name] != nil {
			return nil, fmt.Errorf("database %q is named twice", d.Name)
		}
		s.Databases[d.Name] = d
	}
	return s, nil
}

// parseUpstream reads an upstream as libpq names it: host:port, or a Unix
// socket on this host (its directory, port 5432, or the socket itself,
// .s.PGSQL.<port>), returned as the directory and the port.
func parseUpstream(up string) (host string, port uint16, err error) {
	if strings.HasPrefix(up, "/") {
		dir := filepath.Clean(up)
		base := filepath.Base(dir)
		if !strings.HasPrefix(base, ".s.PGSQL.") {
			return dir, 5432, nil
		}
		p, err := strconv.ParseUint(strings.TrimPrefix(base, ".s.PGSQL."), 10, 16)
		if err != nil || p == 0 {
			return "", 0, fmt.Errorf("upstream %q: a socket named .s.PGSQL.<port>", up)
		}
		return filepath.Dir(dir), uint16(p), nil
	}
	h, ps, err := net.SplitHostPort(up)
	if err != nil || h == "" {
		return "", 0, fmt.Errorf("upstream %q: want host:port, or the absolute path of a Unix socket (or its directory)", up)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("upstream %q: bad port", up)
	}
	return h, uint16(p), nil
}

func compileDatabase(dc DatabaseConfig, getenv func(string) string) (*Database, error) {
	d := &Database{Name: dc.Name, Database: dc.Database, SSLMode: dc.SSLMode, Resource: dc.Resource, Keyspace: dc.Keyspace}
	if dc.Keyspace != "" {
		if err := latchkey.ValidateName("keyspace", dc.Keyspace); err != nil {
			return nil, errors.New(latchkey.ErrorMessage(err))
		}
	}
	if dc.Resource != "" {
		if err := latchkey.ValidateResource(dc.Resource); err != nil {
			return nil, errors.New(latchkey.ErrorMessage(err))
		}
	}
	if d.Name == "" || len(d.Name) > 63 || strings.ContainsAny(d.Name, " \t\r\n\x00.:*") {
		return nil, fmt.Errorf("name %q: a database name of 1 to 63 characters, without spaces, dots, colons or stars", d.Name)
	}
	if d.Database == "" {
		d.Database = d.Name
	}
	var err error
	if d.Host, d.Port, err = parseUpstream(dc.Upstream); err != nil {
		return nil, err
	}
	switch d.SSLMode {
	case "":
		d.SSLMode = "prefer"
	case "disable", "prefer", "require", "verify-ca", "verify-full":
	default:
		return nil, fmt.Errorf("sslmode %q: want disable, prefer, require, verify-ca or verify-full", d.SSLMode)
	}
	if strings.HasPrefix(d.Host, "/") { // no TLS on a Unix socket: the kernel carries it
		if d.SSLMode != "disable" && d.SSLMode != "prefer" {
			return nil, fmt.Errorf("sslmode %q: a Unix socket upstream has no TLS; use disable (or a host:port upstream)", d.SSLMode)
		}
		d.SSLMode = "disable"
	}
	if len(dc.Roles) == 0 {
		return nil, fmt.Errorf("no roles: map at least one scope to an upstream role")
	}
	scopes := map[string]bool{}
	for j, rc := range dc.Roles {
		r, err := compileRole(d.Name, rc, getenv)
		if err != nil {
			return nil, fmt.Errorf("role %d (%s): %v", j+1, rc.Scope, err)
		}
		if scopes[r.Scope] {
			return nil, fmt.Errorf("scope %q is mapped twice", r.Scope)
		}
		scopes[r.Scope] = true
		d.Roles = append(d.Roles, r)
	}
	return d, nil
}

func compileRole(db string, rc RoleConfig, getenv func(string) string) (Role, error) {
	r := Role{Scope: rc.Scope, User: rc.User}
	if err := latchkey.ValidateScope(r.Scope); err != nil {
		return r, err
	}
	if !strings.HasPrefix(r.Scope, "db."+db+":") || strings.Contains(r.Scope, "*") {
		// The DESIGN's namespace (§10): db.<database>:<level>, no wildcard,
		// so that a grant for one database can never reach another.
		return r, fmt.Errorf("scope must be db.%s:<level> (for example db.%s:read), without wildcards", db, db)
	}
	if r.User == "" {
		return r, fmt.Errorf("user: the upstream login role is required")
	}
	n := 0
	for _, v := range []string{rc.Password, rc.PasswordFile, rc.PasswordEnv} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return r, fmt.Errorf("give exactly one of password, password_file and password_env")
	}
	switch {
	case rc.Password != "":
		r.password = rc.Password
	case rc.PasswordFile != "":
		b, err := os.ReadFile(rc.PasswordFile)
		if err != nil {
			return r, fmt.Errorf("password_file: %v", err)
		}
		r.password = strings.TrimRight(string(b), "\r\n")
	default:
		if getenv != nil {
			r.password = getenv(rc.PasswordEnv)
		}
		if r.password == "" {
			return r, fmt.Errorf("password_env: %s is not set", rc.PasswordEnv)
		}
	}
	if r.password == "" {
		return r, fmt.Errorf("the password is empty")
	}
	return r, nil
}

// optDuration is a timeout setting: def when left out, else positive.
func optDuration(s string, def time.Duration) (time.Duration, error) {
	d, err := latchkey.ParseDurationSetting(s, def)
	if err == nil && d <= 0 {
		err = fmt.Errorf("must be positive")
	}
	return d, err
}

// parseBytes reads a size (latchkey.ParseSize), at most 1 GiB (the
// largest message PostgreSQL itself takes).
func parseBytes(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := latchkey.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n > 1<<30 {
		return 0, fmt.Errorf("at most 1GiB")
	}
	return int(n), nil
}

// Resources lists the databases' resource indicators (RFC 8707), the
// audiences tokens may be issued for.
func (st *Settings) Resources() []string {
	var out []string
	for _, d := range st.Databases {
		if d.Resource != "" {
			out = append(out, d.Resource)
		}
	}
	sort.Strings(out)
	return out
}
