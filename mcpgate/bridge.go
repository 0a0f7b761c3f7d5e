package mcpgate

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// bridge serves a stdio MCP server over Streamable HTTP, on a Unix socket
// only the gateway reaches, so that a stdio server is one more upstream
// behind the same checks. Each session gets its own process (a stdio
// server speaks to one client), started at initialize and stopped when
// the session ends; the SDK's transports do the framing on both sides: a
// StreamableServerTransport towards the gateway, a CommandTransport
// towards the process.
type bridge struct {
	srv    *Server
	logger *slog.Logger
	max    int

	dir  string
	sock string
	hs   *http.Server
	ln   net.Listener

	mu       sync.Mutex
	sessions map[string]*bridged
	wg       sync.WaitGroup
	closed   bool
}

type bridged struct {
	t      *mcp.StreamableServerTransport
	down   mcp.Connection
	up     mcp.Connection
	cancel context.CancelFunc
	once   sync.Once
}

func newBridge(s *Server, logger *slog.Logger, max int) *bridge {
	return &bridge{srv: s, logger: logger, max: max, sessions: map[string]*bridged{}}
}

func (b *bridge) start() error {
	dir, err := os.MkdirTemp("", "latchkey-mcp-")
	if err != nil {
		return err
	}
	b.dir, b.sock = dir, filepath.Join(dir, "s")
	ln, err := net.Listen("unix", b.sock)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	b.ln = ln
	b.hs = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go b.hs.Serve(ln)
	return nil
}

func (b *bridge) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", b.sock)
}

func (b *bridge) close() {
	b.mu.Lock()
	b.closed = true
	ss := make([]*bridged, 0, len(b.sessions))
	for _, s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	for _, s := range ss {
		s.stop()
	}
	if b.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		b.hs.Shutdown(ctx)
		cancel()
	}
	b.wg.Wait()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

func (s *bridged) stop() {
	s.once.Do(func() {
		s.cancel()
		s.down.Close()
		s.up.Close()
	})
}

// ServeHTTP is the bridge's Streamable HTTP endpoint. The gateway in
// front has checked every request; the bridge only frames.
func (b *bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" {
		if r.Method != http.MethodPost {
			http.Error(w, "no session", http.StatusBadRequest)
			return
		}
		s, err := b.open(r.Context())
		if err != nil {
			b.logger.Warn("mcp gateway: the stdio server did not start", "server", b.srv.Name, "err", secret.Redact(err.Error()))
			http.Error(w, "the MCP server could not be started", http.StatusBadGateway)
			return
		}
		s.t.ServeHTTP(w, r)
		return
	}
	b.mu.Lock()
	s, ok := b.sessions[id]
	b.mu.Unlock()
	if !ok {
		http.Error(w, "session not found", http.StatusNotFound)
		return
	}
	if r.Method == http.MethodDelete {
		b.drop(id, s)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.t.ServeHTTP(w, r)
}

func (b *bridge) drop(id string, s *bridged) {
	b.mu.Lock()
	delete(b.sessions, id)
	b.mu.Unlock()
	s.stop()
}

// open starts a process for a new session and pumps messages between it
// and the session's transport until either side closes.
func (b *bridge) open(context.Context) (*bridged, error) {
	b.mu.Lock()
	if b.closed || (b.max > 0 && len(b.sessions) >= b.max) {
		b.mu.Unlock()
		return nil, errors.New("too many sessions")
	}
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, b.srv.Command[0], b.srv.Command[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, b.srv.Env...)
	cmd.WaitDelay = 2 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	up, err := (&mcp.CommandTransport{Command: cmd, TerminateDuration: time.Second}).Connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	id := rand.Text()
	t := &mcp.StreamableServerTransport{SessionID: id, EventStore: mcp.NewMemoryEventStore(nil)}
	down, err := t.Connect(ctx)
	if err != nil {
		up.Close()
		cancel()
		return nil, err
	}
	s := &bridged{t: t, down: down, up: up, cancel: cancel}
	b.mu.Lock()
	b.sessions[id] = s
	b.mu.Unlock()
	b.wg.Add(3)
	go func() { defer b.wg.Done(); b.logStderr(stderr) }()
	go func() { defer b.wg.Done(); pump(ctx, down, up); b.drop(id, s) }()
	go func() { defer b.wg.Done(); pump(ctx, up, down); b.drop(id, s) }()
	return s, nil
}

// pump copies messages from one connection to the other until one fails.
func pump(ctx context.Context, from, to mcp.Connection) {
	for {
		m, err := from.Read(ctx)
		if err != nil {
			return
		}
		if err := to.Write(ctx, m); err != nil {
			return
		}
	}
}

// logStderr logs what the process writes to its standard error, line by
// line, redacted and cut.
func (b *bridge) logStderr(r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		b.logger.Info("mcp server stderr", "server", b.srv.Name, "line", edge.Clip(secret.Redact(sc.Text()), 512))
	}
}
