package main

// Revocation propagation across a cluster: three latchkey processes on
// loopback share one PostgreSQL database; a token is revoked on node A and
// node C is asked until it refuses it.
//
//	go test -run '^$' -bench BenchmarkPropagation -benchtime=1x ./cmd/latchkey/

import (
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/tokens"
)

func BenchmarkPropagation(b *testing.B) {
	dsn := pgSchemaB(b)
	key := strings.Repeat("4b", 32)
	bin := buildBinaryB(b)
	var addrs, dirs []string
	for range 3 {
		dir, addr := b.TempDir(), freeAddrB(b)
		cmd := exec.Command(bin, "serve", "--listen", addr, "--data-dir", dir, "--database", dsn, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "LATCHKEY_SERVER_KEY="+key)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); cmd.Wait() })
		deadline := time.Now().Add(15 * time.Second)
		for {
			if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatal("node did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		addrs, dirs = append(addrs, addr), append(dirs, dir)
	}
	var root string
	for _, d := range dirs {
		if r, err := os.ReadFile(d + "/root-token"); err == nil {
			root = strings.TrimSpace(string(r))
		}
	}
	a := &httpapi.Client{BaseURL: "http://" + addrs[0], Token: root}
	c := &httpapi.Client{BaseURL: "http://" + addrs[2], Token: root}
	const n = 200
	var afterCommit, fromRequest []time.Duration
	for range b.N {
		for range n {
			tok, err := a.CreateToken(ctx, tokens.CreateRequest{})
			if err != nil {
				b.Fatal(err)
			}
			if v, _ := c.Verify(ctx, httpapi.VerifyRequest{Token: tok.Plaintext}); !v.Valid { // now cached on C
				b.Fatalf("C: %s", v.Code)
			}
			start := time.Now()
			if _, err := a.RevokeToken(ctx, tok.ID, "bench"); err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			for {
				v, err := c.Verify(ctx, httpapi.VerifyRequest{Token: tok.Plaintext})
				if err == nil && v.Code == latchkey.Revoked {
					break
				}
				if time.Since(start) > 10*time.Second {
					b.Fatal("C never refused the revoked token")
				}
			}
			afterCommit, fromRequest = append(afterCommit, time.Since(committed)), append(fromRequest, time.Since(start))
		}
	}
	pct := func(xs []time.Duration, p int) time.Duration {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[(len(s)-1)*p/100]
	}
	b.ReportMetric(float64(pct(afterCommit, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(afterCommit, 99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(pct(fromRequest, 99).Microseconds())/1000, "p99-from-request-ms")
	b.Logf("%d revocations: after the revoke returned p50 %v p99 %v max %v; from the revoke request p50 %v p99 %v",
		len(afterCommit), pct(afterCommit, 50), pct(afterCommit, 99), pct(afterCommit, 100), pct(fromRequest, 50), pct(fromRequest, 99))
}
