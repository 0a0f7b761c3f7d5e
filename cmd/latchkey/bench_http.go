package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/internal/loadgen"
)

// bareVerify is verify-http's second baseline: a plain encoding/json
// handler that reads the same body with the same limits and answers the
// same shape, deciding nothing. (The first, httpapi.BaselineVerify, does
// the same JSON work as latchkey, with latchkey's own code.)
func bareVerify(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		http.Error(w, `{"error":"unauthenticated"}`, http.StatusUnauthorized)
		return
	}
	var req client.VerifyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Token == "" {
		http.Error(w, `{"error":"invalid"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(client.VerifyResponse{Valid: true, Code: latchkey.Valid, TokenID: req.Token[3:19], Scopes: req.Scopes, Meta: json.RawMessage(`{}`)})
}

// verifyCall posts one verification as a backend would: its own verifier
// token, the presented token, a required scope and the end client's
// address (varied within one /24, so the network-spread rule stays quiet).
func verifyCall(hc *http.Client, url, caller, tok string) func(w, i int) bool {
	return func(w, i int) bool {
		body := fmt.Sprintf(`{"token":%q,"scopes":["a:b"],"ip":"198.51.100.%d"}`, tok, (w*31+i)%250+1)
		req, _ := http.NewRequest("POST", url+"/v1/verify", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+caller)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(string(out), `"valid":true`)
	}
}

// verifyServer starts latchkey with cfg and returns its URL, a verifier
// token (latchkey:verify) and a token to verify (a:b).
func (e *benchEnv) verifyServer(cfg serveConfig) (url, caller, tok string, err error) {
	d, root, err := e.start(cfg)
	if err != nil {
		return "", "", "", err
	}
	url = "http://" + d.addr
	c := &client.Client{BaseURL: url, Token: root}
	v, err := c.CreateToken(e.ctx, client.CreateRequest{Name: "bench-verifier", Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		return "", "", "", err
	}
	t, err := c.CreateToken(e.ctx, client.CreateRequest{Name: "bench", Scopes: []string{"a:b"}})
	if err != nil {
		return "", "", "", err
	}
	return url, v.Plaintext, t.Plaintext, nil
}

func (e *benchEnv) benchVerifyHTTP() ([]benchResult, error) {
	lkURL, caller, tok, err := e.verifyServer(serveConfig{})
	if err != nil {
		return nil, err
	}
	sameURL, err := e.listen(http.HandlerFunc(httpapi.BaselineVerify))
	if err != nil {
		return nil, err
	}
	bareURL, err := e.listen(http.HandlerFunc(bareVerify))
	if err != nil {
		return nil, err
	}
	hc := loadgen.Client(e.conc)
	same, bare, lk := verifyCall(hc, sameURL, caller, tok), verifyCall(hc, bareURL, caller, tok), verifyCall(hc, lkURL, caller, tok)
	if !same(0, 0) || !bare(0, 0) || !lk(0, 0) {
		return nil, fmt.Errorf("a verification failed before the run")
	}
	thr := e.throughput("verify-http", "same-work handler (latchkey's JSON code, no decision)", same, lk, "≥ 0.95")
	thrBare := e.throughput("verify-http", "bare encoding/json handler, no decision", bare, lk, "≥ 0.85")
	rate := 0.3 * thr.Base
	lat := e.latency("verify-http", "same-work handler", rate,
		func(i int) bool { return same(i%e.conc, i) }, func(i int) bool { return lk(i%e.conc, i) }, "≤ 1.2")
	return append([]benchResult{thr, thrBare}, lat...), nil
}

// bareForwardAuth is the forward-auth baseline: it answers 200 with the
// headers latchkey would set, deciding nothing (401 without a credential).
func bareForwardAuth(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("X-Latchkey-Token-Id", "AAAAAAAAAAAAAAAA")
	w.Header().Set("X-Latchkey-Scopes", "a:b")
}

// upstream is the service behind the proxies: a small fixed answer.
func (e *benchEnv) upstream() (string, error) {
	body := []byte(`{"ok":true,"items":[1,2,3]}` + "\n")
	return e.listen(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
}

// bareProxy is httputil.ReverseProxy to up over tr, served with
// latchkey's server settings.
func (e *benchEnv) bareProxy(up string, tr http.RoundTripper) (string, error) {
	u, err := url.Parse(up)
	if err != nil {
		return "", err
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() }, Transport: tr}
	return e.listen(rp)
}

func (e *benchEnv) benchGateway() ([]benchResult, error) {
	up, err := e.upstream()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "latchkey-bench-gw")
	if err != nil {
		return nil, err
	}
	e.onCleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - name: api\n    path: /\n    upstream: %s\n    scopes: [\"a:b\"]\n", up)), 0o600); err != nil {
		return nil, err
	}
	d, root, err := e.start(serveConfig{GatewayConfig: conf, GatewayListen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	t, err := (&client.Client{BaseURL: "http://" + d.addr, Token: root}).CreateToken(e.ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		return nil, err
	}
	// The same gateway without its access log: what one line per request
	// costs (here formatted and discarded; a real log also writes it).
	quiet, qroot, err := e.start(serveConfig{GatewayConfig: conf, GatewayListen: "127.0.0.1:0", NoAccessLog: true})
	if err != nil {
		return nil, err
	}
	qt, err := (&client.Client{BaseURL: "http://" + quiet.addr, Token: qroot}).CreateToken(e.ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		return nil, err
	}
	table, err := gateway.LoadConfig(conf)
	if err != nil {
		return nil, err
	}
	tuned, err := e.bareProxy(up, gateway.TransportFor(table))
	if err != nil {
		return nil, err
	}
	dflt, err := e.bareProxy(up, http.DefaultTransport.(*http.Transport).Clone())
	if err != nil {
		return nil, err
	}
	hc := loadgen.Client(e.conc)
	gw := get(hc, "http://"+d.gwAddr+"/items", t.Plaintext, 200, nil)
	bare := get(hc, tuned+"/items", t.Plaintext, 200, nil)
	bareDefault := get(hc, dflt+"/items", t.Plaintext, 200, nil)
	gwQuiet := get(hc, "http://"+quiet.gwAddr+"/items", qt.Plaintext, 200, nil)
	if !gw() || !bare() || !bareDefault() || !gwQuiet() {
		return nil, fmt.Errorf("a request failed before the run")
	}
	thr := e.throughput("gateway", "bare ReverseProxy, same transport", closedOf(bare), closedOf(gw), "≥ 0.90")
	dthr := e.throughput("gateway", "bare ReverseProxy, same transport", closedOf(bare), closedOf(bareDefault), "")
	dthr.Metric = "throughput of a bare ReverseProxy with Go's default transport"
	qthr := e.throughput("gateway", "bare ReverseProxy, same transport", closedOf(bare), closedOf(gwQuiet), "")
	qthr.Metric = "throughput of the gateway with --access-log=false"
	lat := e.latency("gateway", "bare ReverseProxy, same transport", 0.3*thr.Base, openOf(bare), openOf(gw), "")
	return append([]benchResult{thr, dthr, qthr}, lat...), nil
}

// frontProxy is a reverse proxy that, like nginx auth_request, asks auth
// before forwarding (when auth is set) and passes the identity headers on.
func (e *benchEnv) frontProxy(up, auth string, tr *http.Transport) (string, error) {
	u, err := url.Parse(up)
	if err != nil {
		return "", err
	}
	rp := &httputil.ReverseProxy{Transport: tr, Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.SetXForwarded()
		pr.Out.Header.Del("Authorization")
	}}
	if auth == "" {
		return e.listen(rp)
	}
	ac := &http.Client{Transport: tr}
	return e.listen(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", auth, nil)
		req.Header.Set("Authorization", r.Header.Get("Authorization"))
		req.Header.Set("X-Forwarded-Method", r.Method)
		req.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
		req.Header.Set("X-Forwarded-Host", r.Host)
		resp, err := ac.Do(req)
		if err != nil {
			http.Error(w, "auth unavailable", http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			w.WriteHeader(resp.StatusCode)
			return
		}
		for _, h := range []string{"X-Latchkey-Token-Id", "X-Latchkey-Subject", "X-Latchkey-Scopes", "X-Latchkey-Identity"} {
			r.Header.Set(h, resp.Header.Get(h))
		}
		rp.ServeHTTP(w, r)
	}))
}

// forwardAuthServer starts latchkey for the forward-auth scenarios, the
// front proxy on loopback trusted (serve's default), with a token holding
// a:b.
func (e *benchEnv) forwardAuthServer() (*daemon, *client.CreatedToken, error) {
	d, root, err := e.start(serveConfig{TrustedProxies: latchkey.LoopbackProxies})
	if err != nil {
		return nil, nil, err
	}
	t, err := (&client.Client{BaseURL: "http://" + d.addr, Token: root}).CreateToken(e.ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	return d, t, err
}

func (e *benchEnv) benchForwardAuth() ([]benchResult, error) {
	up, err := e.upstream()
	if err != nil {
		return nil, err
	}
	d, t, err := e.forwardAuthServer()
	if err != nil {
		return nil, err
	}
	// The same tuned transport everywhere (the gateway's defaults).
	tr := gateway.TransportFor(&gateway.Table{})
	bareAuth, err := e.listen(http.HandlerFunc(bareForwardAuth))
	if err != nil {
		return nil, err
	}
	plain, err := e.frontProxy(up, "", tr)
	if err != nil {
		return nil, err
	}
	withBare, err := e.frontProxy(up, bareAuth+"/auth", tr)
	if err != nil {
		return nil, err
	}
	withLK, err := e.frontProxy(up, "http://"+d.addr+"/v1/forward-auth?scope=a:b", tr)
	if err != nil {
		return nil, err
	}
	hc := loadgen.Client(e.conc)
	p, b, l := get(hc, plain+"/items", t.Plaintext, 200, nil), get(hc, withBare+"/items", t.Plaintext, 200, nil), get(hc, withLK+"/items", t.Plaintext, 200, nil)
	if !p() || !b() || !l() {
		return nil, fmt.Errorf("a request failed before the run")
	}
	vsProxy := e.throughput("forward-auth", "bare ReverseProxy, no auth", closedOf(p), closedOf(l), "≥ 0.90")
	vsHop := e.throughput("forward-auth", "same proxy asking a bare 200 handler", closedOf(b), closedOf(l), "")
	vsHop.Metric = "throughput (auth hop in the baseline too)"
	lat := e.latency("forward-auth", "same proxy asking a bare 200 handler", 0.3*vsHop.Base, openOf(b), openOf(l), "")
	return append([]benchResult{vsProxy, vsHop}, lat...), nil
}

// benchAudit: HTTP verify throughput with the audit log against without
// it (the store's records are the only difference), and with the
// detector against without.
func (e *benchEnv) benchAudit() ([]benchResult, error) {
	hc := loadgen.Client(e.conc)
	onURL, onCaller, onTok, err := e.apiServer(true)
	if err != nil {
		return nil, err
	}
	offURL, offCaller, offTok, err := e.apiServer(false)
	if err != nil {
		return nil, err
	}
	audit := e.throughput("audit", "audit log off", verifyCall(hc, offURL, offCaller, offTok), verifyCall(hc, onURL, onCaller, onTok), "")
	audit.Metric = "throughput, audit log on"
	dURL, dCaller, dTok, err := e.verifyServer(serveConfig{Detect: detectOff()})
	if err != nil {
		return nil, err
	}
	fullURL, fullCaller, fullTok, err := e.verifyServer(serveConfig{})
	if err != nil {
		return nil, err
	}
	det := e.throughput("audit", "detector off", verifyCall(hc, dURL, dCaller, dTok), verifyCall(hc, fullURL, fullCaller, fullTok), "")
	det.Metric = "throughput, detector on"
	return []benchResult{audit, det}, nil
}
