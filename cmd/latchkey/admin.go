package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/tokens"
)

const recoverRootDoc = `
Break glass: make a new root token (scope latchkey:admin) when every admin
token is lost or revoked, for whoever holds the data directory and the
server key. It talks to the store directly, not to a server.

On SQLite it refuses while a server holds the data directory's lock: stop
the server first. On PostgreSQL (--database) give the same server key as
the nodes (LATCHKEY_SERVER_KEY); the nodes may keep running. The new token
is printed once, written to <data dir>/root-token (mode 0600), and recorded
in the audit log as its own action, token.recover_root. Revoke the tokens
you no longer trust afterwards; the old root token is not touched.`

// cmdAdmin runs the offline administration commands.
func cmdAdmin(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	// args[0] is recover-root: checked by the command tree.
	cfg := serveConfig{ServerKey: getenv("LATCHKEY_SERVER_KEY")}
	fl := newFlags("admin recover-root", "admin recover-root [flags]", recoverRootDoc, stdout, stderr)
	fl.StringVar(&cfg.DataDir, "data-dir", envOr(getenv, "LATCHKEY_DATA_DIR", "./latchkey-data"), "data directory: database, server key, root token [LATCHKEY_DATA_DIR]")
	fl.StringVar(&cfg.Database, "database", getenv("LATCHKEY_DATABASE"), "PostgreSQL `URL` of a cluster (default: SQLite in --data-dir) [LATCHKEY_DATABASE]")
	if _, code := parse(fl, args[1:], 0); code >= 0 {
		return code
	}
	pt, id, err := recoverRoot(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey admin recover-root: %v\n", err)
		return exitAPIError
	}
	path := filepath.Join(cfg.DataDir, "root-token")
	fmt.Fprintf(stdout, "New root token %s (scope latchkey:admin), shown once and saved to %s:\n\n    %s\n\n", id, path, pt.Reveal())
	return exitOK
}

// recoverRoot does the work of admin recover-root.
func recoverRoot(ctx context.Context, cfg serveConfig) (secret.Plaintext, string, error) {
	var none secret.Plaintext
	if cfg.Database == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "latchkey.db")); errors.Is(err, fs.ErrNotExist) {
			return none, "", fmt.Errorf("%s holds no latchkey database: nothing to recover (a first start of serve creates the root token)", cfg.DataDir)
		}
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return none, "", fmt.Errorf("%w; stop the server first", err)
		}
		defer unlock()
	}
	if cfg.ServerKey == "" {
		// Never make a key here: a new key would verify nothing.
		if _, err := os.Stat(filepath.Join(cfg.DataDir, secret.KeyFileName)); err != nil {
			return none, "", fmt.Errorf("no server key: set LATCHKEY_SERVER_KEY or give the --data-dir that holds %s", secret.KeyFileName)
		}
	}
	key, err := loadKey(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return none, "", err
	}
	hasher, err := secret.NewHasher(key)
	if err != nil {
		return none, "", err
	}
	db, _, err := openStore(ctx, cfg, key, slog.New(slog.DiscardHandler))
	if err != nil {
		return none, "", err
	}
	defer db.Close()
	host, _ := os.Hostname()
	svc := &tokens.Service{Store: db, Hasher: hasher, Node: host}
	t, pt, err := svc.RecoverRoot(ctx, "latchkey admin recover-root on "+host)
	if err != nil {
		return none, "", err
	}
	if err := writeSecretFile(filepath.Join(cfg.DataDir, "root-token"), pt.Reveal()+"\n"); err != nil {
		return none, "", fmt.Errorf("the new root token %s was made but could not be saved: %w", t.ID, err)
	}
	return pt, t.ID, nil
}
