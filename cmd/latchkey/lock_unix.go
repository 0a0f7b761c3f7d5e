//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another latchkey server is using %s; one data directory serves one process (use PostgreSQL for several nodes)", dir)
		}
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
