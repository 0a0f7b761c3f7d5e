package main

import (
	"bufio"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// The real binary with --log-format json: every line is one JSON object;
// each gateway and forward-auth request has an access line at info
// (door, method, route, status, latency, token id, source, outcome) and
// never the token; /metrics counts requests per route and carries the
// build information.
func TestJSONAccessLogAndRouteMetrics(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - name: orders\n    path: /orders\n    upstream: %s\n    scopes: [orders:read]\n  - name: broken\n    path: /broken\n    upstream: http://127.0.0.1:1\n    scopes: [orders:read]\n", up.URL)), 0o600)
	gwAddr, apiAddr := freeAddr(t), freeAddr(t)
	_, api, logs := startChildArgs(t, "gateway", "--config", conf, "--listen", gwAddr, "--api-listen", apiAddr, "--data-dir", dir, "--log-format", "json")
	waitListening(t, gwAddr, logs.String)
	c := &client.Client{BaseURL: api, Token: readRoot(t, dir)}
	tok, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	canary := tok.Plaintext
	do := func(base, path string, hdr ...string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+canary)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	gw := "http://" + gwAddr
	if s := do(gw, "/orders/1", "X-Request-Id", "req-1"); s != 200 {
		t.Fatalf("allowed request: %d", s)
	}
	do(gw, "/nowhere/"+canary)  // no route, a token in the path
	do(gw, "/orders/2?page=2")  // a plain query passes
	do(gw, "/broken")           // upstream down
	do(api, "/v1/forward-auth", // forward auth, as nginx asks
		"X-Original-Method", "GET", "X-Original-Uri", "/orders/3", "X-Original-Host", "shop.example")
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`latchkey_door_requests_total{door="gateway",route="orders",status="200"} 2`,
		`latchkey_door_requests_total{door="gateway",route="",status="404"} 1`,
		`latchkey_door_requests_total{door="gateway",route="broken",status="502"} 1`,
		`latchkey_door_requests_total{door="forward_auth",route="orders",status="200"} 1`,
		`latchkey_gateway_upstream_errors_total{route="broken"} 1`,
		`latchkey_door_request_duration_seconds_count{door="gateway",route="orders"} 2`,
		`latchkey_build_info{goversion="go`,
		`go_goroutines `, `process_resident_memory_bytes `,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(metrics), tok.Token.ID) || strings.Contains(string(metrics), canary) {
		t.Error("/metrics names a token")
	}

	waitFor(t, func() bool { return strings.Count(logs.String(), `"msg":"access"`) >= 5 })
	var access []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue // the root token banner is for a person
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("not a JSON line: %q", line)
			continue
		}
		if m["msg"] == "access" {
			access = append(access, m)
		}
	}
	if strings.Contains(logs.String(), canary) || strings.Contains(logs.String(), canary[len(canary)-49:]) {
		t.Error("the token reached the log")
	}
	first := access[0]
	if first["door"] != "gateway" || first["route"] != "orders" || first["status"] != 200.0 || first["token_id"] != tok.Token.ID ||
		first["outcome"] != "VALID" || first["source"] != "127.0.0.1" || first["request_id"] != "req-1" || first["level"] != "INFO" || first["method"] != "GET" {
		t.Errorf("access line: %v", first)
	}
	if _, ok := first["latency"]; !ok {
		t.Errorf("no latency: %v", first)
	}
	seen := map[string]bool{}
	for _, m := range access {
		seen[fmt.Sprintf("%s %s %v %s", m["door"], m["route"], m["status"], m["outcome"])] = true
	}
	for _, want := range []string{"gateway  404 no_route", "gateway broken 502 upstream_failed", "forward_auth orders 200 VALID"} {
		if !seen[want] {
			t.Errorf("no access line %q in %v", want, seen)
		}
	}
	t.Logf("a JSON access line: %s", mustJSON(first))
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// latchkey scan reports a real token (any prefix), never its secret, and
// ignores strings shaped like tokens whose checksum is wrong.
func TestScan(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	real, _, err := secret.Generate("acme_live", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lk, _, _ := secret.Generate("", rand.Reader)
	pt := real.Reveal()
	// A forgery: the same shape, one character of the secret changed.
	forged := pt[:len(pt)-10] + string(rune('A'+(pt[len(pt)-10]-'A'+1)%26)) + pt[len(pt)-9:]
	files := map[string]string{
		"config/app.env":    "API_KEY=" + pt + "\n",
		"src/main.go":       "package main\n\n// example: " + forged + "\nvar k = \"" + "key_" + lk.Reveal() + "\"\n",
		"docs/readme.md":    "tokens look like lk_0123456789abcdef_" + strings.Repeat("a", 49) + "\n",
		".git/objects/blob": pt, // history is gitleaks' job; .git is skipped
	}
	for name, body := range files {
		os.MkdirAll(filepath.Join(repo, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(repo, name), []byte(body), 0o600)
	}
	code, out, errs := offline("scan", "--json", repo)
	var found []finding
	if err := json.Unmarshal([]byte(out), &found); err != nil {
		t.Fatalf("scan --json: %v %q %s", err, out, errs)
	}
	if code != exitRefused || len(found) != 2 {
		t.Fatalf("scan: exit %d, %d findings %+v, want 1 and 2", code, len(found), found)
	}
	byPath := map[string]finding{}
	for _, f := range found {
		byPath[strings.TrimPrefix(f.Path, repo+"/")] = f
	}
	if f := byPath["config/app.env"]; f.Prefix != "acme_live" || f.Line != 1 || f.Column != 9 {
		t.Errorf("the acme_live token: %+v", f)
	}
	if f := byPath["src/main.go"]; f.Prefix != "lk" || f.Line != 4 || f.Column != 14 {
		t.Errorf("the lk token behind key_: %+v", f)
	}
	// The text report names the place and the id, never the secret.
	code, out, _ = offline("scan", repo)
	if code != exitRefused || !strings.Contains(out, "config/app.env:1:9: latchkey token acme_live_") || strings.Contains(out, pt) || strings.Contains(out, lk.Reveal()) {
		t.Errorf("scan: %d %s", code, out)
	}
	// --prefix keeps the given prefixes; a clean tree exits 0; stdin works.
	if code, out, _ := offline("scan", "--prefix", "acme_live", "--json", repo); code != exitRefused || strings.Count(out, `"path"`) != 1 {
		t.Errorf("--prefix: %d %s", code, out)
	}
	os.Remove(filepath.Join(repo, "config/app.env"))
	os.Remove(filepath.Join(repo, "src/main.go"))
	if code, out, errs := offline("scan", repo); code != exitOK || out != "" {
		t.Errorf("a clean tree (with a forged token's shape in docs): %d %q %q", code, out, errs)
	}
	var o, e strings.Builder
	if code := run(ctx, []string{"scan", "-"}, strings.NewReader("x "+pt+" y"), &o, &e, func(string) string { return "" }); code != exitRefused {
		t.Errorf("scan -: %d %s %s", code, o.String(), e.String())
	}
	if code, _, errs := offline("scan", filepath.Join(repo, "missing")); code != exitUsage || !strings.Contains(errs, "missing") {
		t.Errorf("a missing path: %d %s", code, errs)
	}
	if code, _, _ := offline("scan", "--prefix", "Bad-Prefix"); code != exitUsage {
		t.Errorf("a bad --prefix: %d", code)
	}
}

// otlpReceiver is an OTLP/HTTP trace receiver: it keeps every span it is
// sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, _ := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// inTrace maps the names of the spans of one trace to its spans.
func (o *otlpReceiver) inTrace(traceID string) map[string]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := map[string]*tracepb.Span{}
	for _, s := range o.spans {
		if fmt.Sprintf("%x", s.TraceId) != traceID {
			continue
		}
		if _, ok := m[s.Name]; !ok {
			m[s.Name] = s
		}
	}
	return m
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v, ok := kv.Value.Value.(*commonpb.AnyValue_StringValue); ok {
				return v.StringValue
			}
			return kv.Value.String()
		}
	}
	return ""
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, one gateway request is one trace:
// the gateway's server span (continuing the client's W3C trace context),
// the verification under it (a store read on first use), and the upstream
// call, whose trace context reaches the upstream in traceparent.
func TestTraceOfAGatewayRequest(t *testing.T) {
	t.Parallel()
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()
	var upTP sync.Map
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upTP.Store(r.URL.Path, r.Header.Get("Traceparent"))
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - name: orders\n    path: /orders\n    upstream: %s\n    scopes: [orders:read]\n", up.URL)), 0o600)
	gwAddr, apiAddr := freeAddr(t), freeAddr(t)
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL, "OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_SERVICE_NAME=latchkey-test"}
	_, api, logs := startChildEnv(t, env, "gateway", "--config", conf, "--listen", gwAddr, "--api-listen", apiAddr, "--data-dir", dir)
	waitListening(t, gwAddr, logs.String)
	c := &client.Client{BaseURL: api, Token: readRoot(t, dir)}
	tok, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", "http://"+gwAddr+"/orders/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gateway: %d", resp.StatusCode)
	}
	names := []string{"gateway orders", "latchkey.verify", "latchkey.store.get_token", "gateway.upstream orders"}
	waitFor(t, func() bool {
		m := recv.inTrace(clientTrace)
		for _, n := range names {
			if m[n] == nil {
				return false
			}
		}
		return true
	})
	m := recv.inTrace(clientTrace)
	if len(m) != len(names) {
		t.Errorf("the trace has spans %v, want %v", slices.Collect(maps.Keys(m)), names)
	}
	server, ver, load, upstream := m[names[0]], m[names[1]], m[names[2]], m[names[3]]
	hexID := func(b []byte) string { return fmt.Sprintf("%x", b) }
	for _, s := range []*tracepb.Span{server, ver, load, upstream} {
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.String(), tok.Plaintext[len(tok.Plaintext)-49:]) {
				t.Errorf("span %q carries the secret", s.Name)
			}
		}
	}
	if hexID(server.ParentSpanId) != "00f067aa0ba902b7" || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %x kind %v", server.ParentSpanId, server.Kind)
	}
	if string(ver.ParentSpanId) != string(server.SpanId) || attr(ver, "latchkey.code") != "VALID" || attr(ver, "latchkey.cache") != "load" || attr(ver, "latchkey.token_id") != tok.Token.ID {
		t.Errorf("verify span: %v", ver)
	}
	if string(load.ParentSpanId) != string(ver.SpanId) {
		t.Errorf("the store read is not under the verification")
	}
	if string(upstream.ParentSpanId) != string(server.SpanId) || upstream.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("upstream span: %v", upstream)
	}
	tp, _ := upTP.Load("/orders/1")
	if want := "00-" + clientTrace + "-" + hexID(upstream.SpanId) + "-01"; tp != want {
		t.Errorf("the upstream got traceparent %q, want %q", tp, want)
	}
	if attr(server, "http.route") != "orders" || attr(server, "latchkey.outcome") != "VALID" {
		t.Errorf("server span attributes: %v", server.Attributes)
	}
	t.Logf("trace %s: %s ← %s ← %s; %s ← %s", clientTrace, load.Name, ver.Name, server.Name, upstream.Name, server.Name)
}

// gitleaks' rule is a regular expression, so it reports forged and
// mistyped tokens too; latchkey scan, given gitleaks' findings, keeps the
// real ones only (docs/secret-scanning.md).
func TestScanAsGitleaksCompanion(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("gitleaks")
	if err != nil {
		requireService(t, "gitleaks")
	}
	real, _, _ := secret.Generate("", rand.Reader)
	pt := real.Reveal()
	forged := pt[:30] + strings.Repeat("x", len(pt)-30)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.env"), []byte("LATCHKEY_TOKEN="+pt+"\nEXAMPLE_TOKEN="+forged+"\n"), 0o600)
	report := filepath.Join(t.TempDir(), "report.json")
	cfg, _ := filepath.Abs("../../docs/gitleaks.toml")
	out, err := exec.Command(bin, "dir", "--config", cfg, "--report-format", "json", "--report-path", report, "--no-banner", "--exit-code", "7", dir).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("gitleaks: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(report)
	var findings []struct{ RuleID, Secret string }
	json.Unmarshal(b, &findings)
	var secrets []string
	for _, f := range findings {
		if f.RuleID == "latchkey-api-token" {
			secrets = append(secrets, f.Secret)
		}
	}
	if len(secrets) != 2 {
		t.Fatalf("gitleaks reported %d latchkey-api-token findings, want 2 (the real one and the forgery)", len(secrets))
	}
	var o, e strings.Builder
	code := run(ctx, []string{"scan", "--json", "-"}, strings.NewReader(strings.Join(secrets, "\n")), &o, &e, func(string) string { return "" })
	var confirmed []finding
	json.Unmarshal([]byte(o.String()), &confirmed)
	if code != exitRefused || len(confirmed) != 1 || confirmed[0].ID != pt[3:19] {
		t.Errorf("latchkey scan of gitleaks' findings: exit %d %s %s", code, o.String(), e.String())
	}
}
