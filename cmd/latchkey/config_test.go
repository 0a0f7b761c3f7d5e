package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/detect"
)

func readConfig(t *testing.T, args []string, envs map[string]string) (serveConfig, int, string) {
	t.Helper()
	var errb bytes.Buffer
	cfg, code := readServeConfig(args, func(k string) string { return envs[k] }, &errb, &errb)
	return cfg, code, errb.String()
}

// Every setting is read one way: the flag, else its environment twin,
// else the default.
func TestServeConfigSources(t *testing.T) {
	t.Parallel()
	cfg, code, errs := readConfig(t, nil, nil)
	if code >= 0 {
		t.Fatalf("defaults: exit %d: %s", code, errs)
	}
	if cfg.Listen != "127.0.0.1:7480" || cfg.DataDir != "./latchkey-data" || cfg.AuditBatch != 2048 || cfg.AuditQueue != 16384 ||
		cfg.Detect.Off || cfg.NoUI || cfg.Detect.NetworkSpreadAction != detect.Action("suspend") || len(cfg.TrustedProxies) == 0 {
		t.Errorf("defaults: %+v", cfg)
	}
	env := map[string]string{"LATCHKEY_LISTEN": "127.0.0.1:9", "LATCHKEY_DEFAULT_TTL": "30d", "LATCHKEY_DETECT": "false",
		"LATCHKEY_WEBHOOKS": "http://a.example/h, http://b.example/h", "LATCHKEY_WEBHOOK_SECRET": strings.Repeat("s", 16),
		"LATCHKEY_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.1", "LATCHKEY_DETECT_SOURCE_FAILURES": "5/10s", "LATCHKEY_SERVER_KEY": "k"}
	cfg, code, errs = readConfig(t, nil, env)
	if code >= 0 {
		t.Fatalf("environment: exit %d: %s", code, errs)
	}
	if cfg.Listen != "127.0.0.1:9" || cfg.Policy.DefaultTTL != 30*24*time.Hour || !cfg.Detect.Off || len(cfg.Webhooks) != 2 ||
		len(cfg.TrustedProxies) != 2 || cfg.Detect.SourceFailures != (detect.Rule{Count: 5, Window: 10 * time.Second}) || cfg.ServerKey != "k" {
		t.Errorf("environment: %+v", cfg)
	}
	// The flag wins, even over a bad environment value; a repeated flag
	// is a list, or the last value.
	env["LATCHKEY_AUDIT_BATCH_SIZE"] = "many"
	cfg, code, errs = readConfig(t, []string{"--listen", "127.0.0.1:8", "--audit-batch-size", "7", "--detect", "--webhook", "http://c.example/h",
		"--webhook", "http://d.example/h", "--listen", "127.0.0.1:10"}, env)
	if code >= 0 {
		t.Fatalf("flags: exit %d: %s", code, errs)
	}
	if cfg.Listen != "127.0.0.1:10" || cfg.AuditBatch != 7 || cfg.Detect.Off || strings.Join(cfg.Webhooks, " ") != "http://c.example/h http://d.example/h" {
		t.Errorf("flags: %+v", cfg)
	}
}

// A bad value is a usage error that names where it came from, and
// values that go together are checked together.
func TestServeConfigRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"LATCHKEY_AUDIT_BATCH_SIZE": "many"}, "LATCHKEY_AUDIT_BATCH_SIZE"},
		{[]string{"--audit-batch-size", "0"}, nil, "--audit-batch-size"},
		{nil, map[string]string{"LATCHKEY_UI": "yes please"}, "LATCHKEY_UI"},
		{nil, map[string]string{"LATCHKEY_REQUIRE_EXPIRY": "maybe"}, "LATCHKEY_REQUIRE_EXPIRY"},
		{[]string{"--redis", "http://nope"}, nil, "--redis"},
		{[]string{"--redis-failure", "open"}, nil, "--redis-failure"},
		{[]string{"--audit-durability", "eventually"}, nil, "--audit-durability"},
		{[]string{"--database", "mysql://x"}, nil, "--database"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--detect-source-failures", "20"}, nil, "--detect-source-failures"},
		{[]string{"--detect-network-spread-action", "explode"}, nil, "action"},
		{[]string{"--trusted-proxy", "nope"}, nil, "--trusted-proxy"},
		{[]string{"--leak-keys", "/nonexistent"}, nil, "--leak-keys"},
		{[]string{"--webhook", "http://a.example/h"}, nil, "secret"},
		{[]string{"--webhook", "ftp://a.example/h", "--webhook-secret", strings.Repeat("s", 16)}, nil, "http"},
		{[]string{"--tls-cert", "c.pem"}, nil, "--tls-key"},
		{[]string{"--audit-archive-dir", "x"}, nil, "--audit-retention"},
		{[]string{"--default-ttl", "100d", "--max-lifetime", "90d"}, nil, "maximum lifetime"},
		{[]string{"stray"}, nil, "argument"},
	} {
		_, code, errs := readConfig(t, c.args, c.env)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("serve %v %v: exit %d, %q; want a usage error naming %q", c.args, c.env, code, errs, c.want)
		}
	}
}

// --help lists every flag with its environment twin, and every twin is
// distinct.
func TestServeConfigHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	readServeConfig([]string{"--help"}, func(string) string { return "" }, &out, &out)
	seen := map[string]bool{}
	for i := range serveSettings {
		s := &serveSettings[i]
		if seen[s.envName()] {
			t.Errorf("%s is the twin of two settings", s.envName())
		}
		seen[s.envName()] = true
		if s.flag == "" {
			if !strings.Contains(serveDoc, s.envName()) {
				t.Errorf("%s is read but serve --help does not explain it", s.envName())
			}
			continue
		}
		if !strings.Contains(out.String(), "-"+s.flag+" ") && !strings.Contains(out.String(), "-"+s.flag+"\n") {
			t.Errorf("--help does not list --%s", s.flag)
		}
		if !strings.Contains(out.String(), "["+s.envName()+"]") {
			t.Errorf("--help does not name %s", s.envName())
		}
		if (s.set == nil) == (s.list == nil) || (s.kind == listSetting) != (s.list != nil) {
			t.Errorf("--%s: a setting has exactly one parser, for its kind", s.flag)
		}
	}
}

// The README points at the generated table, and every flag it names is a
// setting.
func TestServeConfigInREADME(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, "## Configuration")
	j := strings.Index(readme[i:], "Client commands read:")
	if i < 0 || j < 0 {
		t.Fatal("README has no configuration section")
	}
	section := readme[i : i+j]
	if !strings.Contains(section, "(docs/configuration.md)") {
		t.Error("README's configuration section does not link docs/configuration.md")
	}
	known := map[string]bool{"--config": true, "LATCHKEY_CONFIG": true}
	for k := range serveSettings {
		s := &serveSettings[k]
		known[s.envName()], known[s.envName()+"_FILE"] = true, s.secret
		known["--"+s.flag], known["--"+s.flag+"-file"] = s.flag != "", s.secret
	}
	for _, m := range regexp.MustCompile("`(--[a-z-]+|LATCHKEY_[A-Z_]+)").FindAllStringSubmatch(section, -1) {
		if !known[m[1]] {
			t.Errorf("README's configuration section names %s, which serve does not read", m[1])
		}
	}
}

// The configuration file sits between the environment and the defaults;
// secrets come from files in every source; mistakes name their place.
func TestServeConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "hook-secret")
	os.WriteFile(secretFile, []byte("from-a-file-0123456789\n"), 0o600)
	conf := filepath.Join(dir, "latchkey.yaml")
	write := func(body string) { os.WriteFile(conf, []byte(body), 0o600) }
	write(`# a comment
listen: 127.0.0.1:9001
data-dir: /var/lib/latchkey
default-ttl: 30d
detect: false
webhook: [http://a.example/h, http://b.example/h]
webhook-secret-file: ` + secretFile + `
audit-batch-size: 64
`)
	cfg, code, errs := readConfig(t, []string{"--config", conf}, nil)
	if code >= 0 {
		t.Fatalf("file: exit %d: %s", code, errs)
	}
	if cfg.Listen != "127.0.0.1:9001" || cfg.DataDir != "/var/lib/latchkey" || cfg.Policy.DefaultTTL != 30*24*time.Hour || !cfg.Detect.Off ||
		len(cfg.Webhooks) != 2 || cfg.WebhookSecret != "from-a-file-0123456789" || cfg.AuditBatch != 64 || cfg.AuditQueue != 16384 {
		t.Errorf("file: %+v", cfg)
	}
	// The environment beats the file, the flag beats both; LATCHKEY_CONFIG names the file.
	cfg, code, errs = readConfig(t, []string{"--audit-batch-size", "8"}, map[string]string{"LATCHKEY_CONFIG": conf, "LATCHKEY_LISTEN": "127.0.0.1:9002", "LATCHKEY_AUDIT_BATCH_SIZE": "16"})
	if code >= 0 || cfg.Listen != "127.0.0.1:9002" || cfg.AuditBatch != 8 || cfg.DataDir != "/var/lib/latchkey" {
		t.Errorf("precedence: %d %s %+v", code, errs, cfg)
	}
	// _FILE twins: the environment's and the flag's.
	cfg, code, _ = readConfig(t, []string{"--webhook", "http://c.example/h"}, map[string]string{"LATCHKEY_WEBHOOK_SECRET_FILE": secretFile})
	if code >= 0 || cfg.WebhookSecret != "from-a-file-0123456789" {
		t.Errorf("LATCHKEY_WEBHOOK_SECRET_FILE: %+v", cfg)
	}
	cfg, code, _ = readConfig(t, []string{"--webhook", "http://c.example/h", "--webhook-secret-file", secretFile}, nil)
	if code >= 0 || cfg.WebhookSecret != "from-a-file-0123456789" {
		t.Errorf("--webhook-secret-file: %+v", cfg)
	}
	keyFile := filepath.Join(dir, "server-key")
	os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600)
	if cfg, code, _ = readConfig(t, nil, map[string]string{"LATCHKEY_SERVER_KEY_FILE": keyFile}); code >= 0 || cfg.ServerKey != strings.Repeat("ab", 32) {
		t.Errorf("LATCHKEY_SERVER_KEY_FILE: %+v", cfg)
	}
	for _, c := range []struct {
		file string
		args []string
		env  map[string]string
		want string
	}{
		{"listne: x\n", nil, nil, `latchkey.yaml:1: unknown setting "listne"; did you mean "listen"?`},
		{"audit-batch-size: many\n", nil, nil, `the configuration file's audit-batch-size: "many": want a positive number`},
		{"webhook-secret: abcdefghijklmnopq\nwebhook-secret-file: /x\n", nil, nil, "the configuration file's webhook-secret and the configuration file's webhook-secret-file both set"},
		{"listen: [a, b]\n", nil, nil, "listen: want a single value"},
		{"listen: a\nlisten: b\n", nil, nil, `"listen" is set twice`},
		{"- just\n- a list\n", nil, nil, "want a mapping"},
		{"", nil, map[string]string{"LATCHKEY_WEBHOOK_SECRET": "x", "LATCHKEY_WEBHOOK_SECRET_FILE": secretFile}, "LATCHKEY_WEBHOOK_SECRET and LATCHKEY_WEBHOOK_SECRET_FILE both set"},
		{"", []string{"--webhook-secret-file", filepath.Join(dir, "missing")}, nil, "--webhook-secret-file: open"},
		{"", []string{"--listen-file", "x"}, nil, "unknown flag --listen-file"}, // only secrets have file twins
	} {
		write(c.file)
		_, code, errs := readConfig(t, append([]string{"--config", conf}, c.args...), c.env)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%q %v: exit %d, %q; want 2 and %q", c.file, c.args, code, errs, c.want)
		}
	}
	if _, code, errs := readConfig(t, []string{"--config", filepath.Join(dir, "none.yaml")}, nil); code != exitUsage || !strings.Contains(errs, "none.yaml") {
		t.Errorf("a missing file: %d %s", code, errs)
	}
}
