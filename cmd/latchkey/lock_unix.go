//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockDataDir takes an exclusive lock on <dir>/lock for the life of the
// process. Two servers on one SQLite file would each cache tokens, and a
// revocation through one would reach the other only when its cache entry
// went stale; the second server is refused instead.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	// A lock just released can stay held for a moment by a process this
	// one is starting: a forked child keeps every descriptor until it
	// execs. So a held lock is tried again for half a second before the
	// other server is taken to be real.
	for tries := 0; ; tries++ {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || tries == lockTries {
			break
		}
		time.Sleep(lockRetry)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another latchkey server is using %s; one data directory serves one process (use PostgreSQL for several nodes)", dir)
		}
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

const (
	lockTries = 10
	lockRetry = 50 * time.Millisecond
)
