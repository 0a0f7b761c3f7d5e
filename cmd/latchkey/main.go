// Command latchkey is the latchkey server and its command-line client, in
// one binary. Run "latchkey help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/latchkeyhq/latchkey"
)

// Exit statuses.
const (
	exitOK          = 0 // success; for verify, the token is VALID
	exitRefused     = 1 // verify: the token was refused (any code but VALID); a confirmation was declined
	exitUsage       = 2 // bad command line or input, found by the CLI or by the server (invalid_argument)
	exitAPIError    = 3 // the server refused otherwise (not found, permission denied, conflict, ...)
	exitUnreachable = 4 // the server could not be reached, or its store is unavailable (503): retrying may succeed
)

const usage = `latchkey: API tokens, issued, verified, limited, revoked and audited.

Usage:
  latchkey <command> [arguments]

Server:
  serve                 run the server (embedded SQLite in --data-dir)
  gateway               run the gateway: a reverse proxy that checks every request's token
  bench                 measure latchkey on this machine against same-run baselines
  admin recover-root    break glass: a new root token from the data directory and server key

Client (talks to the server at $LATCHKEY_ADDR with $LATCHKEY_TOKEN):
  token create          issue a token; its plaintext is printed once
  token list            list tokens, newest first (--rotation-due, --parent, ...)
  token show ID         show one token
  token update ID       rename, retag, change meta, or narrow scopes
  token rotate ID       issue a successor; the old one works for --grace longer
  token derive ID       mint a narrower child of a token
  token suspend ID      suspend a token and its descendants (reversible)
  token resume ID       lift a suspension
  token revoke ID       revoke for good, with descendants (or in bulk: --subject,
                        --tag, --prefix, --parent; asks first, spares your own token)
  verify TOKEN          verify a token; exit status 0 only if it is VALID
  audit tail            show the latest audit records (-f to follow live)
  audit verify          check the audit log's hash chain; exit 1 if it is broken
  audit export          write audit records as JSON Lines (--since)
  audit summary         attempts today and per second, valid/refused/blocked
  blocks list           sources the detector has blocked
  blocks remove SOURCE  lift a block
  sessions list         open database and MCP sessions on the node (--token ID)
  sessions end ID       end one now (its token is untouched)
  mcp holds             tool calls the MCP gateway holds for a person
  mcp approve|deny ID   decide a held call
  mcp tools             pinned tool definitions, and changed ones
  mcp accept S T FP     accept a tool's changed definition
  oauth clients         the OAuth authorization server's clients
  oauth revoke ID       revoke a client and every token issued to it
  keyspace list|show|create|update|delete
                        keyspaces: one prefix, one policy, their own admin scopes
  role list|set|delete  a keyspace's roles (named scope sets, resolved at verification)
  identity list|set|delete
                        limits shared by every token of a subject
  token request         ask for a token that approvers must agree to
  request list|show|approve|deny|claim
                        access requests: decide them, or collect an approved token

  scan [PATH...]        find real latchkey tokens in files, offline (CI, pre-commit)

  completion SHELL      print a completion script for bash, zsh or fish
  version               print the version, the commit it was built from, Go's version
  help [command]        explain a command

Environment:
  LATCHKEY_ADDR         server address for client commands (default http://127.0.0.1:7480)
  LATCHKEY_TOKEN        admin token for client commands (or LATCHKEY_TOKEN_FILE, a file
                        holding it); on a loopback address the client falls back to
                        <data dir>/root-token
  LATCHKEY_DATA_DIR     data directory (default ./latchkey-data)
  LATCHKEY_CA_FILE      PEM file of CA certificates to trust for an https:// LATCHKEY_ADDR

Exit status:
  0  success (verify: the token is VALID; scan: nothing found)
  1  verify: the token was refused; scan: tokens found; a confirmation declined
  2  usage or input error: a bad command, flag or value, found here or by the
     server (invalid_argument)
  3  the server refused otherwise (not found, permission denied, conflict)
  4  the server could not be reached

Run "latchkey <command> --help" (or "latchkey help <command>") for a
command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is how commands read the environment; tests pass their own.
type env func(string) string

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	// Nothing the server stores reaches the terminal raw (issue 12).
	stdout, stderr = &termSafe{w: stdout}, &termSafe{w: stderr}
	c := &invocation{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	return dispatch(c, commands(), "latchkey", args)
}

// strs is a repeatable string flag.
type strs []string

func (s *strs) String() string     { return strings.Join(*s, ",") }
func (s *strs) Set(v string) error { *s = append(*s, v); return nil }

// newFlags returns a FlagSet whose --help prints the command's synopsis,
// doc and flags (as --name) to stdout. Errors are reported by parse, in
// one line.
func newFlags(name, synopsis, doc string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: latchkey %s\n\n%s\n", synopsis, strings.TrimSpace(doc))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(stdout, "\nFlags:\n")
			printFlags(stdout, fs)
		}
	}
	return fs
}

// parse parses flags and positional arguments in any order ("verify TOKEN
// --scope a" and "verify --scope a TOKEN" alike). It returns the positional
// arguments, or a non-negative exit status when parsing should stop: 0
// after --help, 2 after a usage error (reported in one line on stderr).
func parse(fs *flag.FlagSet, args []string, wantPos int) ([]string, int) {
	var pos []string
	path := "latchkey " + fs.Name()
	help, out := fs.Usage, fs.Output()
	fs.Usage = func() {} // the flag package would print it after any error
	fs.SetOutput(io.Discard)
	defer func() { fs.Usage = help; fs.SetOutput(out) }()
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				help()
				return nil, exitOK
			}
			usageError(out, path, flagError(fs, err))
			return nil, exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		if args[0] == "help" && len(pos) == 0 && wantPos == 0 {
			help()
			return nil, exitOK
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if wantPos >= 0 && len(pos) != wantPos {
		msg := fmt.Sprintf("expected %d argument(s), got %d", wantPos, len(pos))
		if wantPos == 0 {
			msg = fmt.Sprintf("unexpected argument %q", pos[0])
		}
		usageError(out, path, msg)
		return nil, exitUsage
	}
	return pos, -1
}

// apiExit reports err and returns the exit status for it.
func apiExit(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "latchkey %s: %s\n", cmd, latchkey.ErrorMessage(err))
	switch latchkey.ErrorCode(err) {
	case latchkey.EUnavailable:
		return exitUnreachable
	case latchkey.EInvalid: // the server found the input wrong: a usage error like the CLI's own
		return exitUsage
	}
	return exitAPIError
}

// envOr is the environment variable name, or def when it is unset.
func envOr(getenv env, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
