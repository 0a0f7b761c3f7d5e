package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/latchkeyhq/latchkey/internal/loadgen"
)

// nginxAuthConf is nginx in front of the upstream, asking AUTH first the
// way the README's snippet does (auth_request, the identity headers passed
// on, the credential dropped): the real topology for forward auth. The
// baseline runs the same file with AUTH a handler that answers 200.
const nginxAuthConf = `daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp;
    proxy_temp_path %[1]s/tmp;
    fastcgi_temp_path %[1]s/tmp;
    uwsgi_temp_path %[1]s/tmp;
    scgi_temp_path %[1]s/tmp;
    upstream backend { server %[2]s; keepalive 32; }
    server {
        listen %[3]s;
        location / {
            auth_request /_latchkey;
            auth_request_set $lk_id $upstream_http_x_latchkey_token_id;
            auth_request_set $lk_scopes $upstream_http_x_latchkey_scopes;
            proxy_set_header X-Latchkey-Token-Id $lk_id;
            proxy_set_header X-Latchkey-Scopes $lk_scopes;
            proxy_set_header Authorization "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
        location = /_latchkey {
            internal;
            proxy_pass %[4]s;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-Host $host;
            proxy_set_header X-Forwarded-Method "";
            proxy_set_header X-Forwarded-Uri "";
            proxy_set_header X-Forwarded-Host "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }
    }
}
`

// startNginx runs nginx with nginxAuthConf, asking auth, in front of up,
// and returns its URL.
func (e *benchEnv) startNginx(nginx, up, auth string) (string, error) {
	prefix, err := os.MkdirTemp("", "latchkey-bench-nginx")
	if err != nil {
		return "", err
	}
	e.onCleanup(func() { os.RemoveAll(prefix) })
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxAuthConf, prefix, strings.TrimPrefix(up, "http://"), addr, auth)), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(nginx, "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	e.onCleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			return "", fmt.Errorf("nginx did not start: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchNginx: nginx auth_request to latchkey's /v1/forward-auth against
// the same nginx auth_request to a handler that answers 200 (same headers
// back, no decision): what latchkey's decision costs in the topology
// people deploy.
func (e *benchEnv) benchNginx() ([]benchResult, error) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return []benchResult{{Scenario: "forward-auth-nginx", Metric: "throughput", Skipped: "nginx is not installed", Target: "≥ 0.90"}}, nil
	}
	up, err := e.upstream()
	if err != nil {
		return nil, err
	}
	d, t, err := e.forwardAuthServer()
	if err != nil {
		return nil, err
	}
	bareAuth, err := e.listen(http.HandlerFunc(bareForwardAuth))
	if err != nil {
		return nil, err
	}
	withBare, err := e.startNginx(nginx, up, bareAuth+"/auth")
	if err != nil {
		return nil, err
	}
	withLK, err := e.startNginx(nginx, up, "http://"+d.addr+"/v1/forward-auth?scope=a:b")
	if err != nil {
		return nil, err
	}
	hc := loadgen.Client(e.conc)
	b, l := get(hc, withBare+"/items", t.Plaintext, 200, nil), get(hc, withLK+"/items", t.Plaintext, 200, nil)
	if !b() || !l() {
		return nil, fmt.Errorf("a request through nginx failed before the run")
	}
	thr := e.throughput("forward-auth-nginx", "nginx auth_request to a bare 200 handler", closedOf(b), closedOf(l), "≥ 0.90")
	thr.Metric = "throughput, nginx auth_request to latchkey"
	lat := e.latency("forward-auth-nginx", "nginx auth_request to a bare 200 handler", 0.3*thr.Base, openOf(b), openOf(l), "")
	return append([]benchResult{thr}, lat...), nil
}
