package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/internal/loadgen"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

func detectOff() detect.Config { return detect.Config{Off: true} }

var benchAdmin = latchkey.Actor{System: "bench", Scopes: []string{latchkey.AdminScope}}

// apiServer is the HTTP API on SQLite with or without the audit log and
// nothing else (no detector, no webhooks): the audit figure's two sides
// differ only in the records.
func (e *benchEnv) apiServer(withAudit bool) (url, caller, tok string, err error) {
	dir, err := os.MkdirTemp("", "latchkey-bench")
	if err != nil {
		return "", "", "", err
	}
	e.onCleanup(func() { os.RemoveAll(dir) })
	db, err := sqlite.Open(e.ctx, filepath.Join(dir, "latchkey.db"))
	if err != nil {
		return "", "", "", err
	}
	key := make([]byte, 32)
	rand.Read(key)
	h, err := secret.NewHasher(key)
	if err != nil {
		db.Close()
		return "", "", "", err
	}
	var pipe *audit.Pipeline
	if withAudit {
		pipe = &audit.Pipeline{Sink: db, Logger: e.logger}
		pipe.Start()
	}
	v := verify.New(db, h, pipe, verify.Config{})
	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate}
	e.onCleanup(func() {
		v.Close(context.Background())
		if pipe != nil {
			pipe.Close(context.Background())
		}
		db.Close()
	})
	api := &httpapi.Server{Verifier: v, Tokens: svc, Audit: db, Logger: e.logger}
	if url, err = e.listen(api.Handler()); err != nil {
		return "", "", "", err
	}
	_, vp, err := svc.Create(e.ctx, benchAdmin, client.CreateRequest{Name: "bench-verifier", Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		return "", "", "", err
	}
	_, tp, err := svc.Create(e.ctx, benchAdmin, client.CreateRequest{Name: "bench", Scopes: []string{"a:b"}})
	if err != nil {
		return "", "", "", err
	}
	return url, vp.Reveal(), tp.Reveal(), nil
}

// stores lists the stores a scenario runs on: SQLite, and PostgreSQL when
// --database is set.
func (e *benchEnv) stores() (names []string, configs []serveConfig, err error) {
	names, configs = []string{"sqlite"}, []serveConfig{{}}
	if e.database != "" {
		dsn, err := e.pgSchema()
		if err != nil {
			return nil, nil, err
		}
		names, configs = append(names, "postgres"), append(configs, serveConfig{Database: dsn})
	}
	return names, configs, nil
}

func (e *benchEnv) benchIssue() ([]benchResult, error) {
	names, cfgs, err := e.stores()
	if err != nil {
		return nil, err
	}
	var out []benchResult
	for i, name := range names {
		d, root, err := e.start(cfgs[i])
		if err != nil {
			return nil, err
		}
		hc := loadgen.Client(e.conc)
		c := &client.Client{BaseURL: "http://" + d.addr, Token: root, HTTP: hc}
		create := func(w, i int) bool {
			_, err := c.CreateToken(e.ctx, client.CreateRequest{Name: "bench", Subject: "svc", Scopes: []string{"a:b"}})
			return err == nil
		}
		if !create(0, 0) {
			return nil, fmt.Errorf("%s: creating a token failed", name)
		}
		loadgen.Closed(e.conc, max(e.window/4, 50*time.Millisecond), create)
		var runs []float64
		for range e.pairs {
			v, _ := loadgen.Closed(e.conc, e.window, create)
			runs = append(runs, v)
		}
		r := benchResult{Scenario: "issue", Metric: fmt.Sprintf("tokens created, %d issuers, %s", e.conc, name), Unit: "tokens/s",
			Value: loadgen.Median(runs)}
		if name == "sqlite" && e.conc == 16 {
			r.Target = "≥ 5000" // the target is for 16 concurrent issuers
		}
		out = append(out, r)
	}
	if e.database == "" {
		out = append(out, benchResult{Scenario: "issue", Metric: "tokens created, postgres", Skipped: "no --database"})
	}
	return out, nil
}

func (e *benchEnv) benchColdVerify() ([]benchResult, error) {
	names, cfgs, err := e.stores()
	if err != nil {
		return nil, err
	}
	n := min(2000, max(200, int(e.window/time.Millisecond)*4))
	var out []benchResult
	for i, name := range names {
		d, _, err := e.start(cfgs[i])
		if err != nil {
			return nil, err
		}
		// 2n fresh tokens: half verified (each a cache miss), half read
		// straight from the store (the baseline).
		pts, ids := make([]string, 2*n), make([]string, 2*n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for w := range e.conc {
			wg.Go(func() {
				for j := w; j < 2*n; j += e.conc {
					t, pt, err := d.svc.Create(e.ctx, benchAdmin, client.CreateRequest{Name: "cold", Subject: "svc", Scopes: []string{"a:b"}})
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					pts[j], ids[j] = pt.Reveal(), t.ID
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return nil, firstErr
		}
		var raw, cold []time.Duration
		for j := 0; j < 2*n; j += 2 {
			t0 := time.Now()
			if _, err := d.db.GetToken(e.ctx, ids[j]); err != nil {
				return nil, err
			}
			raw = append(raw, time.Since(t0))
			t0 = time.Now()
			dec, err := d.ver.Verify(e.ctx, &latchkey.VerifyRequest{Token: pts[j+1], Scopes: []string{"a:b"}, ClientIP: "198.51.100.7"})
			took := time.Since(t0)
			if err != nil || dec.Code != latchkey.Valid {
				return nil, fmt.Errorf("cold verify: %v %v", dec.Code, err)
			}
			cold = append(cold, took)
		}
		b50, l50 := loadgen.Percentile(raw, 50).Seconds(), loadgen.Percentile(cold, 50).Seconds()
		b99, l99 := loadgen.Percentile(raw, 99).Seconds(), loadgen.Percentile(cold, 99).Seconds()
		r := benchResult{Scenario: "cold-verify", Metric: fmt.Sprintf("p50 cache miss, %s (%d tokens)", name, n), Unit: "s",
			Baseline: "raw primary-key read (GetToken)", Base: b50, Value: l50, Ratio: safeRatio(l50, b50)}
		if name == "sqlite" {
			r.Target = "≤ 30µs"
		}
		out = append(out, r, benchResult{Scenario: "cold-verify", Metric: "p99 cache miss, " + name, Unit: "s",
			Baseline: "raw primary-key read (GetToken)", Base: b99, Value: l99, Ratio: safeRatio(l99, b99)})
	}
	if e.database == "" {
		out = append(out, benchResult{Scenario: "cold-verify", Metric: "cache miss, postgres", Skipped: "no --database"})
	}
	return out, nil
}

// benchPropagation runs three latchkey processes on one database and
// times revocations on the first until the third refuses them.
func (e *benchEnv) benchPropagation() ([]benchResult, error) {
	if e.database == "" {
		return []benchResult{{Scenario: "propagation", Metric: "revocation, node A to node C", Skipped: "no --database", Target: "p99 ≤ 50ms"}}, nil
	}
	dsn, err := e.pgSchema()
	if err != nil {
		return nil, err
	}
	afterCommit, fromRequest, receipts, err := e.propagation(dsn, e.revocations)
	if err != nil {
		return nil, err
	}
	sec := func(xs []time.Duration, p float64) float64 { return loadgen.Percentile(xs, p).Seconds() }
	m := fmt.Sprintf("%d revocations, 3 nodes", len(afterCommit))
	return []benchResult{
		{Scenario: "propagation", Metric: "p50 after the revoke returned, " + m, Unit: "s", Value: sec(afterCommit, 50)},
		{Scenario: "propagation", Metric: "p99 after the revoke returned", Unit: "s", Value: sec(afterCommit, 99), Target: "≤ 50ms"},
		{Scenario: "propagation", Metric: "max after the revoke returned", Unit: "s", Value: sec(afterCommit, 100)},
		{Scenario: "propagation", Metric: "p50 from the revoke request", Unit: "s", Value: sec(fromRequest, 50)},
		{Scenario: "propagation", Metric: "p99 from the revoke request", Unit: "s", Value: sec(fromRequest, 99)},
		{Scenario: "propagation", Metric: fmt.Sprintf("receipt (revoke with wait=all, all 3 confirmed): p50, %d revocations", len(receipts)), Unit: "s", Value: sec(receipts, 50)},
		{Scenario: "propagation", Metric: "receipt: p99", Unit: "s", Value: sec(receipts, 99), Target: "≤ 20ms"},
		{Scenario: "propagation", Metric: "receipt: max", Unit: "s", Value: sec(receipts, 100)},
	}, nil
}

// propagation starts three processes of the latchkey binary on dsn and,
// n times: creates a token on A, caches it on C, revokes it on A, and asks
// C until it refuses it. It returns the times from the revoke's answer
// and from its request. Then, n times, it revokes a token cached on B and
// C with wait=all, and returns the receipts' times (each must have all
// three nodes' confirmation).
func (e *benchEnv) propagation(dsn string, n int) (afterCommit, fromRequest, receipts []time.Duration, err error) {
	key := make([]byte, 32)
	rand.Read(key)
	var addrs, dirs []string
	for i := range 3 {
		dir, err := os.MkdirTemp("", "latchkey-bench-node")
		if err != nil {
			return nil, nil, nil, err
		}
		e.onCleanup(func() { os.RemoveAll(dir) })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		addr := ln.Addr().String()
		ln.Close()
		cmd := exec.Command(e.exe, "serve", "--listen", addr, "--data-dir", dir, "--database", dsn, "--node", fmt.Sprintf("bench-%d", i), "--log-level", "warn")
		cmd.Env = append(os.Environ(), "LATCHKEY_SERVER_KEY="+hex.EncodeToString(key))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, nil, nil, err
		}
		e.onCleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); cmd.Wait() })
		deadline := time.Now().Add(30 * time.Second)
		for {
			if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				return nil, nil, nil, fmt.Errorf("node %d did not start (%s serve)", i, e.exe)
			}
			time.Sleep(20 * time.Millisecond)
		}
		addrs, dirs = append(addrs, addr), append(dirs, dir)
	}
	var root string
	for _, d := range dirs {
		if r, err := os.ReadFile(filepath.Join(d, "root-token")); err == nil {
			root = strings.TrimSpace(string(r))
		}
	}
	a := &client.Client{BaseURL: "http://" + addrs[0], Token: root}
	c := &client.Client{BaseURL: "http://" + addrs[2], Token: root}
	for range n {
		tok, err := a.CreateToken(e.ctx, client.CreateRequest{})
		if err != nil {
			return nil, nil, nil, err
		}
		if v, err := c.Verify(e.ctx, client.VerifyRequest{Token: tok.Plaintext}); err != nil || !v.Valid {
			return nil, nil, nil, fmt.Errorf("node C: %+v %v", v, err)
		}
		start := time.Now()
		if _, err := a.RevokeToken(e.ctx, tok.ID, "bench"); err != nil {
			return nil, nil, nil, err
		}
		committed := time.Now()
		for {
			v, err := c.Verify(e.ctx, client.VerifyRequest{Token: tok.Plaintext})
			if err == nil && v.Code == latchkey.Revoked {
				break
			}
			if time.Since(start) > 10*time.Second {
				return nil, nil, nil, fmt.Errorf("node C never refused a revoked token")
			}
		}
		afterCommit, fromRequest = append(afterCommit, time.Since(committed)), append(fromRequest, time.Since(start))
	}
	b := &client.Client{BaseURL: "http://" + addrs[1], Token: root}
	for len(receipts) < n {
		tok, err := a.CreateToken(e.ctx, client.CreateRequest{})
		if err != nil {
			return nil, nil, nil, err
		}
		for _, x := range []*client.Client{b, c} {
			if v, err := x.Verify(e.ctx, client.VerifyRequest{Token: tok.Plaintext}); err != nil || !v.Valid {
				return nil, nil, nil, fmt.Errorf("caching on B and C: %+v %v", v, err)
			}
		}
		res, err := a.RevokeTokenWait(e.ctx, tok.ID, "bench", client.Wait{Timeout: 5 * time.Second})
		if err != nil {
			return nil, nil, nil, err
		}
		switch r := res.Receipt; {
		case r.Nodes < 3 && len(receipts) == 0:
			time.Sleep(100 * time.Millisecond) // the nodes have not all stamped the live-node list yet
		case r.Nodes != 3 || r.Confirmed != 3:
			return nil, nil, nil, fmt.Errorf("a receipt without every node: %+v", r)
		default:
			receipts = append(receipts, time.Duration(r.TookMS*float64(time.Millisecond)))
		}
	}
	return afterCommit, fromRequest, receipts, nil
}

// memLoader hands out a fresh token record per read, as a store does.
type memLoader struct {
	hashes map[string][]byte
}

func (m *memLoader) GetToken(_ context.Context, id string) (*latchkey.Token, error) {
	h, ok := m.hashes[id]
	if !ok {
		return nil, latchkey.Errorf(latchkey.ENotFound, "no token %s", id)
	}
	now := time.Now()
	return &latchkey.Token{ID: id, Prefix: "lk", Name: "billing-worker", Subject: "svc-billing", Scopes: []string{"invoices:read", "invoices:write"},
		Status: latchkey.StatusActive, Version: 1, CreatedAt: now, Hash: h}, nil
}

// benchMemory caches --memory-tokens tokens in a verifier and reports the
// heap they hold, per token: the cache's slot and the token record it
// keeps.
func (e *benchEnv) benchMemory() ([]benchResult, error) {
	key := make([]byte, 32)
	rand.Read(key)
	h, err := secret.NewHasher(key)
	if err != nil {
		return nil, err
	}
	n := e.memTokens
	loader := &memLoader{hashes: make(map[string][]byte, n)}
	pts := make([]string, n)
	for i := range n {
		pt, parts, err := secret.Generate("lk", rand.Reader)
		if err != nil {
			return nil, err
		}
		pts[i] = pt.Reveal()
		loader.hashes[parts.ID] = h.Sum(parts.ID, &parts.Secret)
	}
	v := verify.New(loader, h, nil, verify.Config{MaxEntries: max(1<<21, 2*n)})
	defer v.Close(context.Background())
	before := settledHeap()
	for _, pt := range pts {
		if d, err := v.Verify(e.ctx, &latchkey.VerifyRequest{Token: pt, NoSpend: true}); err != nil || d.Code != latchkey.Valid {
			return nil, fmt.Errorf("memory: %v %v", d.Code, err)
		}
	}
	v.FlushUsage(e.ctx)
	after := settledHeap()
	if v.CacheLen() != n {
		return nil, fmt.Errorf("memory: %d cached, want %d", v.CacheLen(), n)
	}
	per := float64(int64(after)-int64(before)) / float64(n)
	runtime.KeepAlive(pts)
	runtime.KeepAlive(loader)
	return []benchResult{{Scenario: "memory", Metric: fmt.Sprintf("heap per cached token (%d tokens)", n), Unit: "B", Value: per, Target: "≤ 256 B"}}, nil
}

// settledHeap collects garbage until the live heap stops shrinking (what
// earlier scenarios left behind is still being released by their
// goroutines) and returns it.
func settledHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	last := ms.HeapAlloc
	for range 20 {
		time.Sleep(20 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc >= last-last/1000 {
			return ms.HeapAlloc
		}
		last = ms.HeapAlloc
	}
	return ms.HeapAlloc
}
