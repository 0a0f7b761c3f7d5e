package pggate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodConfig = `
databases:
  - name: analytics
    upstream: 127.0.0.1:5432
    roles:
      - {scope: "db.analytics:read", user: ro, password: pw}
`

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	s, err := ParseConfig([]byte(goodConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Databases["analytics"]
	if s.Listen != DefaultListen || s.StatementTextLimit != DefaultStatementTextLimit || s.MaxMessageBytes != DefaultMaxMessageBytes ||
		s.StartupTimeout != 10*time.Second || s.ConnectTimeout != 10*time.Second || s.AllowCleartextPassword || s.LogParameters ||
		d == nil || d.Database != "analytics" || d.Host != "127.0.0.1" || d.Port != 5432 || d.SSLMode != "prefer" ||
		len(d.Roles) != 1 || d.Roles[0].password != "pw" {
		t.Fatalf("defaults: %+v %+v", s, d)
	}
}

// A Unix socket upstream: its directory (port 5432) or the socket file
// itself; TLS cannot be asked for on one.
func TestParseConfigUnixSocket(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		upstream, sslmode string
		host              string
		port              uint16
	}{
		{"/var/run/postgresql", "", "/var/run/postgresql", 5432},
		{"/var/run/postgresql/", "disable", "/var/run/postgresql", 5432},
		{"/tmp/.s.PGSQL.6543", "prefer", "/tmp", 6543},
	} {
		cfg := strings.Replace(goodConfig, "127.0.0.1:5432", c.upstream+"\n    sslmode: "+c.sslmode, 1)
		if c.sslmode == "" {
			cfg = strings.Replace(goodConfig, "127.0.0.1:5432", c.upstream, 1)
		}
		s, err := ParseConfig([]byte(cfg), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.upstream, err)
		}
		if d := s.Databases["analytics"]; d.Host != c.host || d.Port != c.port || d.SSLMode != "disable" {
			t.Errorf("%s: host %q port %d sslmode %q", c.upstream, d.Host, d.Port, d.SSLMode)
		}
	}
}

// Every mistake is refused with an error that names it, and a password
// never appears in one.
func TestParseConfigRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	db := func(body string) string { return "databases:\n  - name: analytics\n" + body }
	role := "    roles:\n      - {scope: \"db.analytics:read\", user: ro, password: SECRET-PW}\n"
	for _, c := range []struct{ cfg, want string }{
		{"", "no databases"},
		{"databases: []", "no databases"},
		{"listen: nope\n" + goodConfig, "listen"},
		{"tls: {cert: a.pem}\n" + goodConfig, "cert and key go together"},
		{"statement_text_limit: -1\n" + goodConfig, "statement_text_limit"},
		{"statement_text_limit: 2000000\n" + goodConfig, "statement_text_limit"},
		{"max_sessions: -1\n" + goodConfig, "max_sessions"},
		{"max_message_bytes: 2GiB\n" + goodConfig, "at most 1GiB"},
		{"max_message_bytes: lots\n" + goodConfig, "max_message_bytes"},
		{"startup_timeout: -1s\n" + goodConfig, "startup_timeout"},
		{"connect_timeout: soon\n" + goodConfig, "connect_timeout"},
		{"unknown_setting: 1\n" + goodConfig, "unknown_setting"},
		{db("    upstream: 127.0.0.1:5432\n    colour: red\n" + role), "colour"},
		{db("    upstream: 127.0.0.1:5432\n    resource: db.example.com/analytics\n" + role), "absolute URL"},
		{"databases:\n  - name: an.alytics\n    upstream: 127.0.0.1:5432\n" + role, "name"},
		{"databases:\n  - name: \"\"\n    upstream: 127.0.0.1:5432\n" + role, "name"},
		{db("    upstream: 127.0.0.1\n" + role), "want host:port"},
		{db("    upstream: :5432\n" + role), "want host:port"},
		{db("    upstream: 127.0.0.1:0\n" + role), "bad port"},
		{db("    upstream: 127.0.0.1:70000\n" + role), "bad port"},
		{db("    upstream: relative/dir\n" + role), "want host:port"},
		{db("    upstream: /tmp/.s.PGSQL.x\n" + role), ".s.PGSQL.<port>"},
		{db("    upstream: /var/run/postgresql\n    sslmode: require\n" + role), "has no TLS"},
		{db("    upstream: 127.0.0.1:5432\n    sslmode: maybe\n" + role), "sslmode"},
		{db("    upstream: 127.0.0.1:5432\n"), "no roles"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.other:read\", user: ro, password: SECRET-PW}\n"), "db.analytics:<level>"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:*\", user: ro, password: SECRET-PW}\n"), "without wildcards"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", password: SECRET-PW}\n"), "user"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: ro}\n"), "exactly one"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: ro, password: SECRET-PW, password_env: X}\n"), "exactly one"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: ro, password_env: LK_UNSET}\n"), "LK_UNSET is not set"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: ro, password_file: " + empty + "}\n"), "empty"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: ro, password_file: " + filepath.Join(dir, "missing") + "}\n"), "password_file"},
		{db("    upstream: 127.0.0.1:5432\n    roles:\n      - {scope: \"db.analytics:read\", user: a, password: SECRET-PW}\n      - {scope: \"db.analytics:read\", user: b, password: SECRET-PW}\n"), "mapped twice"},
		{goodConfig + "  - name: analytics\n    upstream: 127.0.0.1:5433\n    roles:\n      - {scope: \"db.analytics:read\", user: ro, password: SECRET-PW}\n", "named twice"},
	} {
		_, err := ParseConfig([]byte(c.cfg), func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config\n%s\nerror %v, want one naming %q", c.cfg, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "SECRET-PW") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
