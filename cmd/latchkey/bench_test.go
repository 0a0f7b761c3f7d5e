package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// The CI smoke run of latchkey bench: every scenario runs, briefly, and
// reports figures (no thresholds: speed is never asserted in a test).
func TestBenchSmoke(t *testing.T) {
	// Not parallel: the memory scenario reads this process's heap, which
	// the package's parallel tests would move both ways. (Go runs the
	// parallel tests only once every sequential one has finished.)
	if testing.Short() {
		t.Skip("starts several servers")
	}
	dsn := testPostgresDSN()
	pgSchema(t) // fails or skips as the other PostgreSQL tests do when it is absent
	bin := buildBinary(t)
	getenv := func(k string) string {
		if k == "LATCHKEY_BENCH_BINARY" {
			return bin
		}
		return ""
	}
	var out, errb bytes.Buffer
	code := run(ctx, []string{"bench", "--json", "--duration", "60ms", "--pairs", "1", "--connections", "4",
		"--memory-tokens", "2000", "--revocations", "5", "--database", dsn}, nil, &out, &errb, getenv)
	if code != exitOK {
		t.Fatalf("bench exited %d:\n%s", code, errb.String())
	}
	var rep struct {
		Results []benchResult `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out.String())
	}
	seen := map[string]int{}
	for _, r := range rep.Results {
		if r.Skipped != "" {
			t.Errorf("%s %s skipped: %s", r.Scenario, r.Metric, r.Skipped)
			continue
		}
		if r.Value <= 0 {
			t.Errorf("%s %s: no figure (%v)", r.Scenario, r.Metric, r.Value)
		}
		if r.Baseline != "" && r.Base <= 0 {
			t.Errorf("%s %s: no baseline figure", r.Scenario, r.Metric)
		}
		seen[r.Scenario]++
	}
	for _, s := range benchScenarios {
		if seen[s] == 0 {
			t.Errorf("scenario %s reported nothing", s)
		}
	}
	// Both stores appear where both are measured.
	for _, s := range []string{"issue", "cold-verify"} {
		var stores []string
		for _, r := range rep.Results {
			if r.Scenario == s {
				for _, st := range []string{"sqlite", "postgres"} {
					if strings.Contains(r.Metric, st) && !slices.Contains(stores, st) {
						stores = append(stores, st)
					}
				}
			}
		}
		if len(stores) != 2 {
			t.Errorf("%s measured on %v, want sqlite and postgres", s, stores)
		}
	}
	// Bad flags are refused.
	if code := run(ctx, []string{"bench", "--scenarios", "nope"}, nil, &out, &errb, getenv); code != exitUsage {
		t.Errorf("unknown scenario: exit %d", code)
	}
}
