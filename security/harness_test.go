package security

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/itest"
)

var ctx = context.Background()

// bin is the latchkey binary built for the suite.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "latchkey-security")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "latchkey")
	build := exec.Command("go", "build", "-o", bin, "github.com/latchkeyhq/latchkey/cmd/latchkey")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building latchkey:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireService returns the path of program what, or skips (under
// LATCHKEY_REQUIRE_INTEGRATION=1: fails) when it is not installed.
func requireService(t *testing.T, what string) string {
	t.Helper()
	p, err := exec.LookPath(what)
	if err != nil {
		itest.Require(t, what)
	}
	return p
}

var (
	start         = itest.Start
	freeAddr      = itest.FreeAddr
	waitListening = itest.WaitListening
)

// server is a latchkey process.
type server struct {
	api, gw string // addresses
	dir     string
	root    string
	out     *itest.Buffer
	cmd     *exec.Cmd
}

// routes, when not empty, is a route file's text with UPSTREAM for the
// upstream's URL.
func startLatchkey(t *testing.T, routes, upstream string, args ...string) *server {
	t.Helper()
	s := &server{api: freeAddr(t), dir: t.TempDir()}
	argv := []string{"serve", "--listen", s.api, "--data-dir", s.dir, "--ui=false"}
	if routes != "" {
		path := filepath.Join(s.dir, "routes.yaml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(routes, "UPSTREAM", upstream)), 0o600); err != nil {
			t.Fatal(err)
		}
		s.gw = freeAddr(t)
		argv = append(argv, "--gateway-config", path, "--gateway-listen", s.gw)
	}
	s.cmd = exec.Command(bin, append(argv, args...)...)
	s.cmd.Env = append(os.Environ(), "LATCHKEY_LOG_LEVEL=debug")
	s.out = start(t, s.cmd)
	waitListening(t, s.api, s.out.String)
	if s.gw != "" {
		waitListening(t, s.gw, s.out.String)
	}
	root, err := os.ReadFile(filepath.Join(s.dir, "root-token"))
	if err != nil {
		t.Fatalf("root token: %v\n%s", err, s.out.String())
	}
	s.root = strings.TrimSpace(string(root))
	return s
}

func (s *server) client(tok string) *client.Client {
	return &client.Client{BaseURL: "http://" + s.api, Token: tok, HTTP: operatorHTTP}
}

// operatorHTTP connects from 127.0.0.2: the operator's requests come from
// another source than the attacker's (127.0.0.1), so a block on the
// attacker does not lock the test out.
var operatorHTTP = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
	LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}

// upstream is the service behind the proxies: it records what reaches it.
type upstream struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, r.Clone(context.Background()))
	u.mu.Unlock()
	fmt.Fprint(w, "upstream ok")
}

// take returns and forgets the requests seen so far.
func (u *upstream) take() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.reqs
	u.reqs = nil
	return r
}

// readmeBlock returns the README's fenced block of lang whose text
// contains marker.
func readmeBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```"+regexp.QuoteMeta(lang)+"\n(.*?)```").FindAllSubmatch(b, -1) {
		if strings.Contains(string(m[1]), marker) {
			return string(m[1])
		}
	}
	t.Fatalf("README.md has no %s block containing %q", lang, marker)
	return ""
}

// raw sends one request exactly as written (no client cleans its path)
// and returns the status, headers and body.
func raw(t *testing.T, addr, req string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	io.Copy(&buf, c)
	resp, err := http.ReadResponse(bufio.NewReader(&buf), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v (%q)", req, err, buf.String())
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}
