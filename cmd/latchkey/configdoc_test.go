package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// docs/configuration.md is generated from serveSettings: the table cannot
// drift from the code. LATCHKEY_UPDATE_DOCS=1 rewrites it.
func TestConfigurationDoc(t *testing.T) {
	t.Parallel()
	want := configurationDoc()
	const path = "../../docs/configuration.md"
	if os.Getenv("LATCHKEY_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("docs/configuration.md is not what the settings say; regenerate it:\n  LATCHKEY_UPDATE_DOCS=1 go test ./cmd/latchkey -run TestConfigurationDoc")
	}
}

// cell makes text safe in a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

func configurationDoc() string {
	var b strings.Builder
	b.WriteString(`# Configuration

<!-- Generated from serveSettings (cmd/latchkey/config.go) by TestConfigurationDoc; do not edit by hand:
     LATCHKEY_UPDATE_DOCS=1 go test ./cmd/latchkey -run TestConfigurationDoc -->

Every setting of ` + "`latchkey serve`" + ` (and ` + "`latchkey gateway`" + `, which takes them all) is read
from four sources, the first that has a value winning:

1. the flag (` + "`--listen 0.0.0.0:7480`" + `);
2. its environment variable (` + "`LATCHKEY_LISTEN`" + `);
3. the configuration file, ` + "`--config FILE`" + ` or ` + "`LATCHKEY_CONFIG`" + `;
4. the default.

A value that does not parse stops the start with a usage error (exit 2) naming where it
came from (` + "`--redis: ...`, `LATCHKEY_AUDIT_BATCH_SIZE: ...`, `the configuration file's listen: ...`" + `).
Booleans take ` + "`true` or `false`" + `; a list setting takes a repeated flag, a comma-separated
environment value, or a YAML list in the file.

## The configuration file

YAML; the keys are the flag names (the server key, which has no flag, is ` + "`server-key`" + `).
An unknown key is refused, with a suggestion:

` + "```yaml" + `
# latchkey.yaml: latchkey serve --config latchkey.yaml
listen: 0.0.0.0:7480
data-dir: /var/lib/latchkey
database: postgres://latchkey@db.internal/latchkey
node: api-1
log-format: json
default-ttl: 90d
require-expiry: true
trusted-proxy: [10.0.0.0/8]
webhook: [https://hooks.example.com/latchkey]
webhook-secret-file: /run/secrets/latchkey-webhook
webhook-signature: standard
` + "```" + `

With ` + "`latchkey gateway`" + `, whose ` + "`--config`" + ` is the route file, name the configuration file with
` + "`LATCHKEY_CONFIG`" + `.

## Secrets from files

A secret setting (marked **secret** below) also takes its value from a file, so it need not
appear in the command line (` + "`ps`" + `) or the environment: the flag ` + "`--<name>-file`" + `, the
variable ` + "`<VARIABLE>_FILE`" + ` and the file's key ` + "`<key>-file`" + ` name a file holding it (a Docker
or Kubernetes secret). A final line break is dropped. Giving both a value and a file in the
same source is refused. The client's ` + "`LATCHKEY_TOKEN`" + ` has ` + "`LATCHKEY_TOKEN_FILE`" + ` too.

## Settings

| flag | environment | file key | default | meaning |
|---|---|---|---|---|
`)
	for i := range serveSettings {
		s := &serveSettings[i]
		flag := "—"
		if s.flag != "" {
			flag = "`--" + s.flag + "`"
			if s.secret {
				flag += "<br>`--" + s.flag + "-file`"
			}
		}
		envs := "`" + s.envName() + "`"
		if s.secret {
			envs += "<br>`" + s.envName() + "_FILE`"
		}
		if s.kind == listSetting {
			envs += " (comma-separated)"
		}
		key := "`" + s.key() + "`"
		if s.secret {
			key += "<br>`" + s.key() + "-file`"
		}
		def := "—"
		if s.def != "" {
			def = "`" + s.def + "`"
		} else if s.kind == boolSetting {
			def = "`false`"
		}
		usage := strings.ReplaceAll(s.usage, "`", "")
		if s.secret {
			usage = "**secret.** " + usage
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", flag, envs, key, def, cell(usage))
	}
	b.WriteString(`
## Client commands

| environment | meaning |
|---|---|
| ` + "`LATCHKEY_ADDR`" + ` | the server's address (default ` + "`http://127.0.0.1:7480`" + `) |
| ` + "`LATCHKEY_TOKEN`" + `, ` + "`LATCHKEY_TOKEN_FILE`" + ` | the admin token (or a file holding it); on a loopback address the client falls back to ` + "`<data dir>/root-token`" + ` |
| ` + "`LATCHKEY_DATA_DIR`" + ` | where that root-token file is (default ` + "`./latchkey-data`" + `) |
| ` + "`LATCHKEY_CA_FILE`" + ` | PEM CA certificates to trust for an ` + "`https://`" + ` address |

## Tracing

Off by default. The standard OpenTelemetry variables turn it on and configure it: an OTLP
endpoint (` + "`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`" + `) or
` + "`OTEL_TRACES_EXPORTER=otlp`" + ` starts it; ` + "`OTEL_SDK_DISABLED=true`" + ` or ` + "`OTEL_TRACES_EXPORTER=none`" + `
keeps it off. Spans are exported over OTLP/HTTP (protobuf) in batches (` + "`OTEL_BSP_*`" + `), sampled
as ` + "`OTEL_TRACES_SAMPLER`" + ` says (default: parent-based, always on), with ` + "`service.name`" + ` from
` + "`OTEL_SERVICE_NAME`" + ` (default ` + "`latchkey`" + `) and ` + "`OTEL_RESOURCE_ATTRIBUTES`" + `; headers and TLS from
` + "`OTEL_EXPORTER_OTLP_HEADERS`" + ` and friends. See docs/operations.md for the spans.
`)
	return b.String()
}
