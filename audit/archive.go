package audit

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Pruner is the part of a store retention needs. latchkey.Store
// satisfies it.
type Pruner interface {
	PruneAudit(ctx context.Context, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error)
}

// Prune deletes the audit records older than before. With dir set, every
// record is first written to a new JSON Lines file there
// (audit-<time>.jsonl, mode 0600, synced after each batch), so nothing is
// deleted that is not on disk; the file is created only when there is
// something to archive. The hash chain stays verifiable from its anchor.
func Prune(ctx context.Context, s Pruner, before time.Time, dir string, now time.Time) (int64, error) {
	if dir == "" {
		return s.PruneAudit(ctx, before, nil)
	}
	a := &archive{dir: dir, now: now}
	n, err := s.PruneAudit(ctx, before, a.write)
	if cerr := a.close(); err == nil {
		err = cerr
	}
	return n, err
}

// archive is one pruning run's file, opened on the first batch.
type archive struct {
	dir  string
	now  time.Time
	file *os.File
}

func (a *archive) write(evs []latchkey.AuditEvent) error {
	if a.file == nil {
		if err := os.MkdirAll(a.dir, 0o700); err != nil {
			return err
		}
		name := filepath.Join(a.dir, "audit-"+a.now.UTC().Format("20060102T150405.000000000Z")+".jsonl")
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		a.file = f
	}
	var buf []byte
	for i := range evs {
		b, err := json.Marshal(&evs[i])
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	if _, err := a.file.Write(buf); err != nil {
		return err
	}
	return a.file.Sync()
}

func (a *archive) close() error {
	if a.file == nil {
		return nil
	}
	return a.file.Close()
}
