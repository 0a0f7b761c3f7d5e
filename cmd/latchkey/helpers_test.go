package main

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// requireService skips, or under LATCHKEY_REQUIRE_INTEGRATION=1 fails,
// when an outside service is missing.
func requireService(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available", what)
	}
	t.Skipf("%s is not available; skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", what)
}

// startGroup starts cmd in its own process group and kills the whole
// group at cleanup (nginx forks workers that would outlive the master).
func startGroup(t *testing.T, cmd *exec.Cmd) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return out
}

func freeAddr(t *testing.T) string { return freeAddrB(t) }

func freeAddrB(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(t *testing.T, addr string, logs func() string) {
	deadline := time.Now().Add(15 * time.Second)
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
