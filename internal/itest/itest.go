// Package itest holds what the integration tests of several packages
// share: skipping (or, under LATCHKEY_REQUIRE_INTEGRATION=1, failing) when
// an outside service is missing, running a child process group, free
// ports, and output collected from several goroutines. Only tests import
// it.
package itest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Require skips t, or fails it under LATCHKEY_REQUIRE_INTEGRATION=1,
// because what is missing.
func Require(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available", what)
	}
	t.Skipf("%s is not available; skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", what)
}

// Buffer collects output written from several goroutines.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs cmd in its own process group, its output collected, and at
// cleanup sends the group SIGTERM (SIGKILL after 10 s): nginx forks
// workers that would outlive their master.
func Start(t testing.TB, cmd *exec.Cmd) *Buffer {
	t.Helper()
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	return out
}

// FreeAddr returns a loopback address nothing listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitListening waits up to 20 s for addr to accept connections, failing
// t with logs() if it does not.
func WaitListening(t testing.TB, addr string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %s", addr, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
