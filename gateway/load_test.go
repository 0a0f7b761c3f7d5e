package gateway_test

// The gateway against a bare httputil.ReverseProxy with the same transport
// settings, in front of the same upstream, measured in the same run with
// windows alternating (bare, gateway, bare, gateway, ...):
//
//	go test -run '^$' -bench BenchmarkGatewayVsBareProxy -benchtime=1x -count=5 ./gateway/
//
// Throughput is closed-loop (16 connections as fast as they go). Latency is
// open-loop at a steady rate of 30% of the bare proxy's maximum, found in
// the same run, so queueing does not hide the per-request cost.

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/internal/loadgen"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

const (
	gwWindow = time.Second
	gwConc   = 16
	gwPairs  = 5
)

// request returns one authenticated GET of url, true on a 200.
func request(hc *http.Client, url, tok string) func() bool {
	return func() bool {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	}
}

// closedLoop is gwConc clients against url for d: 200s per second.
func closedLoop(b *testing.B, hc *http.Client, url, tok string, d time.Duration) float64 {
	get := request(hc, url, tok)
	v, failed := loadgen.Closed(gwConc, d, func(int, int) bool { return get() })
	if failed > 0 {
		b.Errorf("%d requests to %s failed", failed, url)
	}
	return v
}

// openLoop is a steady rate against url for d: the latencies.
func openLoop(hc *http.Client, url, tok string, rate float64, d time.Duration) []time.Duration {
	get := request(hc, url, tok)
	lat, _ := loadgen.Open(rate, d, func(int) bool { return get() })
	return lat
}

func p99(lat []time.Duration) time.Duration { return loadgen.Percentile(lat, 99) }

func med(xs []float64) float64 { return loadgen.Median(xs) }

func BenchmarkGatewayVsBareProxy(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"invoice":42,"amount":"12.50","currency":"EUR"}`))
	}))
	defer upstream.Close()

	// The gateway as serve runs it: SQLite store, audit log, detector.
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "g.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	key := make([]byte, 32)
	rand.Read(key)
	h, _ := secret.NewHasher(key)
	det := detect.New(detect.Config{}, nil)
	defer det.Close()
	pipe := &audit.Pipeline{Sink: db, Observe: det.Valid}
	pipe.Start()
	defer pipe.Close(ctx)
	v := verify.New(db, h, pipe, verify.Config{Guard: det})
	defer v.Close(ctx)
	signer, _ := identity.NewSigner(key, 0, 0)
	table, err := gateway.ParseConfig([]byte(`
routes:
  - name: invoices
    path: /v1/invoices
    upstream: ` + upstream.URL + `
    scopes: ["invoices:read"]
`))
	if err != nil {
		b.Fatal(err)
	}
	gw := gateway.New(&gateway.Authorizer{Verifier: v, Refuser: v, Signer: signer, TrustedProxies: latchkey.LoopbackProxies}, table, nil)
	gwSrv := httptest.NewServer(gw)
	defer gwSrv.Close()

	// The baseline: a bare ReverseProxy with the gateway's transport.
	up, _ := url.Parse(upstream.URL)
	bare := &httputil.ReverseProxy{Transport: gateway.TransportFor(table), Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(up)
		pr.SetXForwarded()
	}}
	bareSrv := httptest.NewServer(bare)
	defer bareSrv.Close()
	// A stricter baseline: the bare proxy with the gateway's buffer pool
	// too (a default ReverseProxy allocates a 32 KiB buffer per request).
	pooled := &httputil.ReverseProxy{Transport: gateway.TransportFor(table), BufferPool: gateway.BufferPool(), Rewrite: bare.Rewrite}
	pooledSrv := httptest.NewServer(pooled)
	defer pooledSrv.Close()

	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate}
	_, pt, err := svc.Create(ctx, latchkey.Actor{}, client.CreateRequest{Subject: "bench", Scopes: []string{"invoices:read"}})
	if err != nil {
		b.Fatal(err)
	}
	tok := pt.Reveal()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}}
	gwURL, bareURL, pooledURL := gwSrv.URL+"/v1/invoices/7", bareSrv.URL+"/v1/invoices/7", pooledSrv.URL+"/v1/invoices/7"
	closedLoop(b, hc, gwURL, tok, gwWindow/2) // warm up both
	closedLoop(b, hc, bareURL, tok, gwWindow/2)
	closedLoop(b, hc, pooledURL, tok, gwWindow/2)

	var bareTP, gwTP, pooledTP, tpRatio, pooledRatio, bareP99, gwP99, pooledP99 []float64
	for range b.N {
		for range gwPairs {
			x := closedLoop(b, hc, bareURL, tok, gwWindow)
			y := closedLoop(b, hc, gwURL, tok, gwWindow)
			z := closedLoop(b, hc, pooledURL, tok, gwWindow)
			bareTP, gwTP, pooledTP = append(bareTP, x), append(gwTP, y), append(pooledTP, z)
			tpRatio, pooledRatio = append(tpRatio, y/x), append(pooledRatio, y/z)
		}
		rate := 0.3 * med(bareTP)
		for range gwPairs {
			x := p99(openLoop(hc, bareURL, tok, rate, gwWindow))
			y := p99(openLoop(hc, gwURL, tok, rate, gwWindow))
			z := p99(openLoop(hc, pooledURL, tok, rate, gwWindow))
			bareP99, gwP99 = append(bareP99, float64(x.Microseconds())), append(gwP99, float64(y.Microseconds()))
			pooledP99 = append(pooledP99, float64(z.Microseconds()))
		}
	}
	b.Logf("throughput bare %v gateway %v pooled %v; p99 µs bare %v gateway %v pooled %v", bareTP, gwTP, pooledTP, bareP99, gwP99, pooledP99)
	b.ReportMetric(med(bareTP), "bare-req/s")
	b.ReportMetric(med(gwTP), "gateway-req/s")
	b.ReportMetric(med(tpRatio), "throughput-ratio")
	b.ReportMetric(med(bareP99), "bare-p99-µs")
	b.ReportMetric(med(gwP99), "gateway-p99-µs")
	b.ReportMetric(med(gwP99)/med(bareP99), "p99-ratio")
	b.ReportMetric(med(pooledRatio), "throughput-ratio-vs-pooled")
	b.ReportMetric(med(gwP99)/med(pooledP99), "p99-ratio-vs-pooled")
}
