package main

// A load harness for the detector. They measure
// throughput ratios against a baseline run in the same process, windows
// alternating (A B A B ...), and report medians:
//
//	go test -run '^$' -bench BenchmarkAttack -benchtime=1x -count=3 ./cmd/latchkey/
//
// The audit-cost figure moved to "latchkey bench --scenarios audit".
//
// They are benchmarks, not tests: speed is never asserted in a unit test.

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

const (
	loadWindow = time.Second
	loadConc   = 16
	loadPairs  = 5
)

func loadClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
}

// drive sends valid verifications from many client addresses for d and
// returns how many were answered VALID.
func drive(b *testing.B, hc *http.Client, url, root, tok string, d time.Duration) int64 {
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range loadConc {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				body := fmt.Sprintf(`{"token":%q,"scopes":["a:b"],"ip":"198.51.100.%d"}`, tok, (g*31+i)%250+1) // one /24: no network-spread alarm
				req, _ := http.NewRequest("POST", url+"/v1/verify", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+root)
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				ok := resp.StatusCode == 200
				b2, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if ok && strings.Contains(string(b2), `"valid":true`) {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return n.Load()
}

// attack sends 1,000 forged tokens from one address, 4 at a time, and
// returns how many came back BLOCKED.
func attack(hc *http.Client, url, root, ip string) int {
	var blocked atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < 1000; i += 4 {
				pt, _, _ := secret.Generate("lk", rand.Reader)
				body := fmt.Sprintf(`{"token":%q,"ip":%q}`, pt.Reveal(), ip)
				req, _ := http.NewRequest("POST", url+"/v1/verify", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+root)
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(out), `"BLOCKED"`) {
					blocked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(blocked.Load())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkAttack: real traffic's throughput while 1,000 forged tokens
// arrive from one address, against the same traffic without the attack.
func BenchmarkAttack(b *testing.B) {
	dir := b.TempDir()
	d, err := startDaemon(context.Background(), serveConfig{Listen: "127.0.0.1:0", DataDir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	url := "http://" + d.addr
	root := readRootB(b, dir)
	tok, err := (&client.Client{BaseURL: url, Token: root}).CreateToken(context.Background(), client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		b.Fatal(err)
	}
	hc := loadClient()
	drive(b, hc, url, root, tok.Plaintext, loadWindow/2) // warm up
	var quiet, loud, ratios []float64
	blockedTotal := 0
	for range b.N {
		for p := range loadPairs {
			q := drive(b, hc, url, root, tok.Plaintext, loadWindow)
			var blocked int
			done := make(chan struct{})
			go func() { blocked = attack(hc, url, root, fmt.Sprintf("203.0.113.%d", p+1)); close(done) }()
			a := drive(b, hc, url, root, tok.Plaintext, loadWindow)
			<-done
			blockedTotal += blocked
			quiet, loud = append(quiet, float64(q)), append(loud, float64(a))
			ratios = append(ratios, float64(a)/float64(q))
		}
	}
	b.ReportMetric(median(quiet)/loadWindow.Seconds(), "quiet-verif/s")
	b.ReportMetric(median(loud)/loadWindow.Seconds(), "attack-verif/s")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(float64(blockedTotal)/float64(b.N*loadPairs), "blocked/1000")
}

func readRootB(b *testing.B, dir string) string {
	bs, err := os.ReadFile(filepath.Join(dir, "root-token"))
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(bs))
}
