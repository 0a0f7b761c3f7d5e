package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/latchkeyhq/latchkey/secret"
)

const scanDoc = `
Find latchkey tokens in files, offline: nothing is sent anywhere and no
server is needed. A string is reported only when its CRC-32C checksum is
right, so a string that merely looks like a token (a test fixture, a
forged or mistyped one) is not; a regular expression cannot tell the two
apart, which is why gitleaks' rule alone raises false alarms.

PATH is a file or a directory (walked, skipping .git); - reads standard
input; with no PATH, the current directory. Every prefix is recognised
(lk_, and a keyspace's own such as acme_live_); --prefix keeps only the
given ones. A finding prints its place and the token's id, never its
secret.

Exit status: 0 nothing found, 1 tokens found, 2 usage error or an
unreadable path. As a pre-commit hook (see docs/secret-scanning.md):

  git diff --cached --name-only -z --diff-filter=ACM | xargs -0 -r latchkey scan`

// scanMaxFile bounds what is read of one file.
const scanMaxFile = 64 << 20

// A finding is one checksum-valid token in a file. It never holds the
// secret.
type finding struct {
	Path   string `json:"path"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
	Prefix string `json:"prefix"`
	ID     string `json:"token_id"`
}

var scanRE = regexp.MustCompile(secret.AnyPrefixRegexp)

func cmdScan(args []string, stdin io.Reader, stdout, stderr io.Writer, _ env) int {
	fl := newFlags("scan", "scan [flags] [PATH...]", scanDoc, stdout, stderr)
	var prefixes strs
	fl.Var(&prefixes, "prefix", "report only tokens with this `prefix` (repeatable; default: any)")
	asJSON := fl.Bool("json", false, "print the findings as a JSON array")
	pos, code := parse(fl, args, -1)
	if code >= 0 {
		return code
	}
	for _, p := range prefixes {
		if !secret.ValidPrefix(p) {
			usageError(stderr, "latchkey scan", fmt.Sprintf("--prefix %q is not a token prefix (lower-case words joined by _)", p))
			return exitUsage
		}
	}
	if len(pos) == 0 {
		pos = []string{"."}
	}
	found := []finding{}
	failed := false
	for _, root := range pos {
		if root == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, scanMaxFile))
			if err != nil {
				fmt.Fprintf(stderr, "latchkey scan: standard input: %v\n", err)
				failed = true
			}
			found = append(found, scanBytes("-", b, prefixes)...)
			continue
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == ".git" && path != root {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil // symlinks, devices, sockets
			}
			b, err := readLimited(path)
			if err != nil {
				return err
			}
			found = append(found, scanBytes(path, b, prefixes)...)
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "latchkey scan: %v\n", err)
			failed = true
		}
	}
	if *asJSON {
		printJSON(stdout, found)
	} else {
		for _, f := range found {
			fmt.Fprintf(stdout, "%s:%d:%d: latchkey token %s_%s_… (prefix %s); revoke it: latchkey token revoke %s\n",
				f.Path, f.Line, f.Column, f.Prefix, f.ID, f.Prefix, f.ID)
		}
		if len(found) > 0 {
			fmt.Fprintf(stderr, "latchkey scan: %d token(s) found\n", len(found))
		}
	}
	switch {
	case failed:
		return exitUsage
	case len(found) > 0:
		return exitRefused
	}
	return exitOK
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, scanMaxFile))
}

// scanBytes finds the checksum-valid tokens in b. The pattern's prefix
// may have swallowed words before the real prefix ("key_lk_…"), so each
// shorter prefix is tried too: the checksum covers the prefix, and only
// the real one matches.
func scanBytes(path string, b []byte, only []string) []finding {
	var out []finding
	for _, m := range scanRE.FindAllIndex(b, -1) {
		s := string(b[m[0]:m[1]])
		for start := 0; start < len(s); {
			if p, err := secret.Parse(s[start:]); err == nil {
				if len(only) == 0 || slices.Contains(only, p.Prefix) {
					at := m[0] + start
					line := bytes.Count(b[:at], []byte("\n")) + 1
					col := at - bytes.LastIndexByte(b[:at], '\n')
					out = append(out, finding{Path: path, Line: line, Column: col, Prefix: p.Prefix, ID: p.ID})
				}
				break
			}
			i := strings.IndexByte(s[start:], '_')
			if i < 0 {
				break
			}
			start += i + 1
		}
	}
	return out
}
