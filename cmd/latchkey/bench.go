package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey/internal/loadgen"
)

const benchDoc = `
Measure latchkey on this machine against baselines run alongside it. Each
scenario starts its own servers (temporary data directories, loopback
ports), alternates baseline and latchkey windows (A B A B ...) and reports
medians and ratios, so that a shared, noisy machine still gives figures
that mean something. Results go to standard output as a table, or as JSON
with --json.

Scenarios (--scenarios, comma-separated; default all):
  verify-http   POST /v1/verify against two handlers that decide nothing,
                same server settings: one doing the same JSON work with
                latchkey's own code, and a plain encoding/json one.
                Throughput against each, then p50/p99 at a steady 30% of
                the same-work maximum (a latency window lasts at least long
                enough for 20 calls at that rate, whatever --duration says)
  gateway       the gateway against a bare httputil.ReverseProxy with the
                same tuned transport (and one with Go's default transport),
                in front of the same upstream
  forward-auth  a front proxy asking /v1/forward-auth before forwarding,
                against the same proxy not asking, and asking a bare handler
  forward-auth-nginx
                nginx auth_request to /v1/forward-auth (the README's snippet)
                against the same nginx asking a handler that answers 200
                (skipped without nginx)
  issue         tokens created per second by --connections concurrent
                issuers, each acknowledged once durable (SQLite; and
                PostgreSQL with --database)
  cold-verify   cache-miss verification latency against a raw primary-key
                read from the same store (SQLite; PostgreSQL with --database)
  propagation   three latchkey processes on one PostgreSQL database: time
                from a revoke on one to refusal on another, then the time
                of a revoke's receipt (wait=all: all three confirmed) over
                the same number of revocations (needs --database)
  audit         HTTP verify throughput with the audit log on against off,
                and with the detector on against off
  memory        heap per cached token after caching --memory-tokens tokens

Scenarios that need PostgreSQL run in a schema of their own, dropped
afterwards. Without --database they report that they were skipped.`

// benchResult is one figure: latchkey's value, the baseline's from the
// same run, and their ratio (median of per-pair ratios).
type benchResult struct {
	Scenario string    `json:"scenario"`
	Metric   string    `json:"metric"`
	Unit     string    `json:"unit"`
	Baseline string    `json:"baseline,omitempty"`
	Base     float64   `json:"baseline_value,omitempty"`
	Value    float64   `json:"value"`
	Ratio    float64   `json:"ratio,omitempty"`
	Runs     []float64 `json:"ratio_runs,omitempty"`
	Target   string    `json:"target,omitempty"`
	Skipped  string    `json:"skipped,omitempty"`
}

type benchEnv struct {
	ctx         context.Context
	window      time.Duration
	pairs       int
	conc        int
	database    string
	memTokens   int
	revocations int
	exe         string // the latchkey binary, for scenarios that run processes
	logger      *slog.Logger
	progress    io.Writer
	cleanups    []func()
}

var benchScenarios = []string{"verify-http", "gateway", "forward-auth", "forward-auth-nginx", "issue", "cold-verify", "propagation", "audit", "memory"}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	fs := newFlags("bench", "bench [flags]", benchDoc, stdout, stderr)
	e := &benchEnv{ctx: ctx, logger: slog.New(slog.NewTextHandler(io.Discard, nil)), progress: stderr}
	fs.DurationVar(&e.window, "duration", time.Second, "length of one measurement window; each scenario runs --pairs windows of baseline and latchkey each")
	fs.IntVar(&e.pairs, "pairs", 5, "baseline/latchkey window pairs per figure; the median is reported")
	fs.IntVar(&e.conc, "connections", 16, "concurrent connections (closed-loop throughput) and concurrent issuers")
	scen := fs.String("scenarios", strings.Join(benchScenarios, ","), "comma-separated scenarios to run")
	fs.StringVar(&e.database, "database", getenv("LATCHKEY_DATABASE"), "PostgreSQL `URL` for the PostgreSQL figures (issue, cold-verify, propagation); a schema of their own is created and dropped [LATCHKEY_DATABASE]")
	fs.IntVar(&e.memTokens, "memory-tokens", 1_000_000, "tokens cached for the memory figure")
	fs.IntVar(&e.revocations, "revocations", 200, "revocations timed for the propagation figure")
	asJSON := fs.Bool("json", false, "write the results as JSON instead of a table")
	quiet := fs.Bool("quiet", false, "no progress lines on standard error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (servers and load generator share the process) to `file`, for go tool pprof")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	if e.window <= 0 || e.pairs < 1 || e.conc < 1 || e.memTokens < 1 || e.revocations < 1 {
		fmt.Fprintln(stderr, "latchkey bench: --duration, --pairs, --connections, --memory-tokens and --revocations must be positive")
		return exitUsage
	}
	var run []string
	for _, s := range strings.Split(*scen, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(benchScenarios, s) {
			fmt.Fprintf(stderr, "latchkey bench: unknown scenario %q (want %s)\n", s, strings.Join(benchScenarios, ", "))
			return exitUsage
		}
		run = append(run, s)
	}
	if *quiet {
		e.progress = io.Discard
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "latchkey bench: %v\n", err)
		return exitUsage
	}
	e.exe = envOr(getenv, "LATCHKEY_BENCH_BINARY", exe)
	defer e.cleanup()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey bench: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "latchkey bench: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}
	var results []benchResult
	for _, s := range run {
		fmt.Fprintf(e.progress, "bench: %s ...\n", s)
		start := time.Now()
		rs, err := e.scenario(s)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey bench: %s: %v\n", s, err)
			e.cleanup()
			return exitAPIError
		}
		e.cleanup()
		fmt.Fprintf(e.progress, "bench: %s done in %v\n", s, time.Since(start).Round(time.Millisecond))
		results = append(results, rs...)
		if ctx.Err() != nil {
			break
		}
	}
	if *asJSON {
		out := map[string]any{"machine": benchMachine(), "window": e.window.String(), "pairs": e.pairs,
			"connections": e.conc, "results": results}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return exitUsage
		}
		return exitOK
	}
	writeBenchTable(stdout, results, e)
	return exitOK
}

func (e *benchEnv) scenario(s string) ([]benchResult, error) {
	switch s {
	case "verify-http":
		return e.benchVerifyHTTP()
	case "gateway":
		return e.benchGateway()
	case "forward-auth":
		return e.benchForwardAuth()
	case "forward-auth-nginx":
		return e.benchNginx()
	case "issue":
		return e.benchIssue()
	case "cold-verify":
		return e.benchColdVerify()
	case "propagation":
		return e.benchPropagation()
	case "audit":
		return e.benchAudit()
	case "memory":
		return e.benchMemory()
	}
	return nil, fmt.Errorf("unknown scenario %q", s)
}

func (e *benchEnv) onCleanup(f func()) { e.cleanups = append(e.cleanups, f) }

func (e *benchEnv) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

func benchMachine() map[string]any {
	return map[string]any{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "cpus": runtime.NumCPU(), "go": runtime.Version(), "date": time.Now().UTC().Format(time.RFC3339)}
}

func writeBenchTable(w io.Writer, rs []benchResult, e *benchEnv) {
	m := benchMachine()
	fmt.Fprintf(w, "latchkey bench: %d CPUs, %s, windows of %v, %d pairs, %d connections; medians\n\n", m["cpus"], m["go"], e.window, e.pairs, e.conc)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tbaseline\tbaseline value\tlatchkey\tratio\ttarget")
	for _, r := range rs {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\tskipped: %s\t\t%s\n", r.Scenario, r.Metric, r.Skipped, r.Target)
			continue
		}
		base, ratio := "", ""
		if r.Baseline != "" {
			base = formatBench(r.Base, r.Unit)
		}
		if r.Ratio != 0 {
			ratio = fmt.Sprintf("%.3f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Metric, r.Baseline, base, formatBench(r.Value, r.Unit), ratio, r.Target)
	}
	tw.Flush()
}

func formatBench(v float64, unit string) string {
	switch unit {
	case "s":
		return time.Duration(v * float64(time.Second)).Round(time.Microsecond / 10).String()
	case "req/s", "tokens/s":
		return fmt.Sprintf("%.0f %s", v, unit)
	case "B":
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

// listen serves h on a loopback port with latchkey's own server settings
// and returns its base URL.
func (e *benchEnv) listen(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := newHTTPServer(h, e.logger)
	go srv.Serve(ln)
	e.onCleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// start runs a latchkey server as serve does (audit log, detector), on
// a temporary data directory, and returns it with its root token.
func (e *benchEnv) start(cfg serveConfig) (*daemon, string, error) {
	dir, err := os.MkdirTemp("", "latchkey-bench")
	if err != nil {
		return nil, "", err
	}
	e.onCleanup(func() { os.RemoveAll(dir) })
	cfg.DataDir = dir
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.ServerKey == "" {
		k := make([]byte, 32)
		rand.Read(k)
		cfg.ServerKey = hex.EncodeToString(k)
	}
	if cfg.Node == "" {
		// The bench's nodes share one host, and a database holds one
		// process per node name.
		cfg.Node = "bench-" + filepath.Base(dir)
	}
	d, err := startDaemon(e.ctx, cfg, e.logger, io.Discard)
	if err != nil {
		return nil, "", err
	}
	e.onCleanup(func() { d.Shutdown(context.Background()) })
	root, err := os.ReadFile(filepath.Join(dir, "root-token"))
	if err != nil && cfg.Database == "" {
		return nil, "", err
	}
	return d, strings.TrimSpace(string(root)), nil
}

// pgSchema creates a schema of the scenario's own in --database and
// returns a URL that uses it; it is dropped at cleanup.
func (e *benchEnv) pgSchema() (string, error) {
	dsn, drop, err := tempSchema(e.ctx, e.database, "latchkey_bench_")
	if err != nil {
		return "", err
	}
	e.onCleanup(drop)
	return dsn, nil
}

// errNoPostgres marks a PostgreSQL server that cannot be reached.
var errNoPostgres = errors.New("PostgreSQL is not reachable")

// tempSchema creates a schema named prefix plus random hex in the
// PostgreSQL database at dsn, and returns a URL whose search_path is that
// schema and a function that drops it.
func tempSchema(ctx context.Context, dsn, prefix string) (string, func(), error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", errNoPostgres, err)
	}
	defer c.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	schema := prefix + hex.EncodeToString(b)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, err
	}
	drop := func() {
		if c, err := pgx.Connect(context.Background(), dsn); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema, drop, nil
}

// pair runs baseline and latchkey windows alternately and returns each
// side's values and the per-pair ratios (latchkey / baseline).
func (e *benchEnv) pair(base, lk func() float64) (bs, ls, ratios []float64) {
	for range e.pairs {
		b := base()
		l := lk()
		bs, ls = append(bs, b), append(ls, l)
		if b > 0 {
			ratios = append(ratios, l/b)
		}
	}
	return bs, ls, ratios
}

// throughput is the closed-loop figure for two systems.
func (e *benchEnv) throughput(scenario, baseline string, base, lk func(w, i int) bool, target string) benchResult {
	warm := max(e.window/4, 50*time.Millisecond)
	loadgen.Closed(e.conc, warm, base)
	loadgen.Closed(e.conc, warm, lk)
	bs, ls, ratios := e.pair(
		func() float64 { v, _ := loadgen.Closed(e.conc, e.window, base); return v },
		func() float64 { v, _ := loadgen.Closed(e.conc, e.window, lk); return v })
	return benchResult{Scenario: scenario, Metric: "throughput", Unit: "req/s", Baseline: baseline,
		Base: loadgen.Median(bs), Value: loadgen.Median(ls), Ratio: loadgen.Median(ratios), Runs: ratios, Target: target}
}

// minLatencySamples is the fewest calls a latency window holds: at a low
// rate (a slow system's 30%) a short --duration would otherwise hold one
// call or none, and a percentile of nothing is no figure.
const minLatencySamples = 20

// latency is the open-loop figure at rate for two systems: p50 and p99.
func (e *benchEnv) latency(scenario, baseline string, rate float64, base, lk func(i int) bool, target string) []benchResult {
	var b50, b99, l50, l99, r99 []float64
	window := e.window
	if rate > 0 {
		window = max(window, time.Duration(float64(minLatencySamples+1)/rate*float64(time.Second)))
	}
	for range e.pairs {
		bl, _ := loadgen.Open(rate, window, base)
		ll, _ := loadgen.Open(rate, window, lk)
		bp50, bp99 := loadgen.Percentile(bl, 50).Seconds(), loadgen.Percentile(bl, 99).Seconds()
		lp50, lp99 := loadgen.Percentile(ll, 50).Seconds(), loadgen.Percentile(ll, 99).Seconds()
		b50, b99, l50, l99 = append(b50, bp50), append(b99, bp99), append(l50, lp50), append(l99, lp99)
		if bp99 > 0 {
			r99 = append(r99, lp99/bp99)
		}
	}
	metric := fmt.Sprintf("at %.0f req/s", rate)
	return []benchResult{
		{Scenario: scenario, Metric: "p50 " + metric, Unit: "s", Baseline: baseline, Base: loadgen.Median(b50), Value: loadgen.Median(l50),
			Ratio: safeRatio(loadgen.Median(l50), loadgen.Median(b50))},
		{Scenario: scenario, Metric: "p99 " + metric, Unit: "s", Baseline: baseline, Base: loadgen.Median(b99), Value: loadgen.Median(l99),
			Ratio: loadgen.Median(r99), Runs: r99, Target: target},
	}
}

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// get returns a request function: GET url with the bearer token, true
// when the status is want.
func get(hc *http.Client, url, tok string, want int, hdr map[string]string) func() bool {
	return func() bool {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == want
	}
}

func closedOf(f func() bool) func(w, i int) bool { return func(int, int) bool { return f() } }
func openOf(f func() bool) func(i int) bool      { return func(int) bool { return f() } }
