package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/latchkeyhq/latchkey/internal/buildinfo"
)

// A command is one node of the CLI: a group of commands, or a leaf that
// runs. Every group answers --help and help, refuses an unknown word with
// a one-line error and a suggestion, and is walked by shell completion.
type command struct {
	name    string
	summary string
	doc     string                                 // a group's longer explanation, in its --help
	run     func(c *invocation, args []string) int // a leaf
	subs    []*command                             // a group
	hidden  bool                                   // not listed (__complete)
}

// invocation is what a command runs with.
type invocation struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         env
}

// verbs makes the leaves of a group whose function takes the verb as its
// first argument (cmdKeyspace(ctx, ["create", NAME, ...])).
func verbs(fn func(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int, pairs ...string) []*command {
	var out []*command
	for i := 0; i+1 < len(pairs); i += 2 {
		verb := pairs[i]
		out = append(out, &command{name: verb, summary: pairs[i+1], run: func(c *invocation, args []string) int {
			return fn(c.ctx, append([]string{verb}, args...), c.stdout, c.stderr, c.getenv)
		}})
	}
	return out
}

// leaf adapts the common command signature.
func leaf(name, summary string, fn func(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int) *command {
	return &command{name: name, summary: summary, run: func(c *invocation, args []string) int {
		return fn(c.ctx, args, c.stdout, c.stderr, c.getenv)
	}}
}

// commands is the whole CLI.
func commands() *command {
	return &command{name: "latchkey", subs: []*command{
		{name: "serve", summary: "run the server (embedded SQLite in --data-dir)", run: func(c *invocation, args []string) int {
			return cmdServe(c.ctx, args, c.stdout, c.stderr, c.getenv)
		}},
		{name: "gateway", summary: "run the gateway: a reverse proxy that checks every request's token", run: func(c *invocation, args []string) int {
			return cmdGateway(c.ctx, args, c.stdout, c.stderr, c.getenv)
		}},
		leaf("bench", "measure latchkey on this machine against same-run baselines", cmdBench),
		{name: "admin", doc: recoverRootDoc, summary: "break-glass operations on the data directory", subs: verbs(cmdAdmin,
			"recover-root", "a new root token from the data directory and server key")},
		{name: "token", summary: "issue, list, change and revoke tokens", subs: []*command{
			leaf("create", "issue a token; its plaintext is printed once", cmdTokenCreate),
			leaf("list", "list tokens, newest first", cmdTokenList),
			leaf("show", "show one token", cmdTokenShow),
			leaf("update", "rename, retag, change meta, or narrow scopes", cmdTokenUpdate),
			leaf("rotate", "issue a successor; the old one works for --grace longer", cmdTokenRotate),
			leaf("derive", "mint a narrower child of a token", cmdTokenDerive),
			{name: "suspend", summary: "suspend a token and its descendants (reversible)", run: func(c *invocation, args []string) int {
				return cmdTokenState(c.ctx, "suspend", args, c.stdout, c.stderr, c.getenv)
			}},
			{name: "resume", summary: "lift a suspension", run: func(c *invocation, args []string) int {
				return cmdTokenState(c.ctx, "resume", args, c.stdout, c.stderr, c.getenv)
			}},
			{name: "revoke", summary: "revoke for good, with descendants (or in bulk)", run: func(c *invocation, args []string) int {
				return cmdTokenRevoke(c.ctx, args, c.stdin, c.stdout, c.stderr, c.getenv)
			}},
			leaf("request", "ask for a token that approvers must agree to", cmdTokenRequest),
		}},
		{name: "verify", summary: "verify a token; exit status 0 only if it is VALID", run: func(c *invocation, args []string) int {
			return cmdVerify(c.ctx, args, c.stdin, c.stdout, c.stderr, c.getenv)
		}},
		{name: "scan", summary: "find real latchkey tokens in files, offline", run: func(c *invocation, args []string) int {
			return cmdScan(args, c.stdin, c.stdout, c.stderr, c.getenv)
		}},
		{name: "audit", summary: "read and check the audit log", subs: []*command{
			leaf("tail", "show the latest audit records (-f to follow live)", cmdAuditTail),
			leaf("verify", "check the audit log's hash chain; exit 1 if it is broken", cmdAuditVerify),
			leaf("export", "write audit records as JSON Lines (--since)", cmdAuditExport),
			leaf("summary", "attempts today and per second, valid/refused/blocked", cmdAuditSummary),
			leaf("sources", "who used a token from where: records tallied by client address", cmdAuditSources),
		}},
		{name: "blocks", doc: blocksDoc, summary: "sources the detector has blocked", subs: verbs(cmdBlocks,
			"list", "sources the detector has blocked", "remove", "lift a block")},
		{name: "sessions", doc: sessionsDoc, summary: "open database and MCP sessions on the node", subs: verbs(cmdSessions,
			"list", "open sessions (--token ID)", "end", "end one now (its token is untouched)")},
		{name: "mcp", doc: mcpDoc, summary: "the MCP gateway's held calls and pinned tools", subs: verbs(cmdMCP,
			"holds", "tool calls held for a person", "approve", "let a held call through", "deny", "refuse a held call",
			"tools", "pinned tool definitions, and changed ones", "accept", "accept a tool's changed definition")},
		{name: "oauth", doc: oauthDoc, summary: "the OAuth authorization server's clients", subs: verbs(cmdOAuth,
			"clients", "registered clients", "revoke", "revoke a client and every token issued to it")},
		{name: "keyspace", doc: keyspaceDoc, summary: "keyspaces: one prefix, one policy, their own admin scopes", subs: verbs(cmdKeyspace,
			"list", "the keyspaces your token reaches", "show", "one keyspace and its policy",
			"create", "a new keyspace", "update", "change a keyspace's policy", "delete", "delete an empty keyspace")},
		{name: "role", doc: roleDoc, summary: "a keyspace's roles (named scope sets)", subs: verbs(cmdRole,
			"list", "a keyspace's roles", "set", "create or replace a role", "delete", "delete a role")},
		{name: "identity", doc: identityDoc, summary: "limits shared by every token of a subject", subs: verbs(cmdIdentity,
			"list", "identities with shared limits", "set", "set a subject's shared limits", "delete", "remove them")},
		{name: "request", doc: requestDoc, summary: "access requests: decide them, or collect an approved token", subs: verbs(cmdRequest,
			"list", "access requests you may see", "show", "one request", "approve", "approve a request",
			"deny", "deny a request", "claim", "collect an approved request's token, once")},
		{name: "completion", summary: "print a shell completion script (bash, zsh or fish)", run: cmdCompletion},
		{name: "version", summary: "print the version, revision and Go version (--json)", run: cmdVersion},
		{name: "help", summary: "explain a command"},
		{name: "__complete", hidden: true, run: cmdComplete},
	}}
}

func isHelpWord(a string) bool { return a == "help" || a == "-h" || a == "-help" || a == "--help" }

// dispatch runs the command args name under group g, whose path (for
// messages) is path.
func dispatch(c *invocation, g *command, path string, args []string) int {
	if g.subs == nil {
		return g.run(c, args)
	}
	if len(args) == 0 {
		if g.name == "latchkey" {
			fmt.Fprint(c.stderr, usage)
		} else {
			usageError(c.stderr, path, "expected a command: "+strings.Join(g.names(), ", "))
		}
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		rest := slices.DeleteFunc(slices.Clone(args[1:]), isHelpWord)
		if len(rest) > 0 { // "help token create" is "token create --help"
			return dispatch(c, g, path, append(rest, "--help"))
		}
		g.printHelp(c.stdout, path)
		return exitOK
	case "--version":
		if g.name == "latchkey" {
			return cmdVersion(c, nil)
		}
	}
	sub := g.find(args[0])
	if sub == nil {
		msg := fmt.Sprintf("unknown command %q", args[0])
		if strings.HasPrefix(args[0], "-") {
			msg = fmt.Sprintf("unknown flag %s before a command", dashes(args[0]))
		}
		if s := suggest(strings.TrimLeft(args[0], "-"), g.names()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		usageError(c.stderr, path, msg)
		return exitUsage
	}
	if sub.name == "help" {
		return dispatch(c, g, path, append([]string{"help"}, args[1:]...))
	}
	return dispatch(c, sub, path+" "+sub.name, args[1:])
}

func (g *command) find(name string) *command {
	for _, s := range g.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

func (g *command) names() []string {
	var out []string
	for _, s := range g.subs {
		if !s.hidden {
			out = append(out, s.name)
		}
	}
	return out
}

// printHelp lists a group's commands.
func (g *command) printHelp(w io.Writer, path string) {
	if g.name == "latchkey" {
		fmt.Fprint(w, usage)
		return
	}
	fmt.Fprintf(w, "Usage: %s <command> [arguments]\n\n%s.\n", path, upperFirst(g.summary))
	if g.doc != "" {
		fmt.Fprintf(w, "%s\n", strings.TrimRight(g.doc, "\n"))
	}
	fmt.Fprint(w, "\nCommands:\n")
	for _, s := range g.subs {
		fmt.Fprintf(w, "  %-14s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", path)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// usageError prints the one-line report of a usage or input error.
func usageError(w io.Writer, path, msg string) {
	fmt.Fprintf(w, "%s: %s\nRun '%s --help' for usage.\n", path, msg, path)
}

// dashes writes a flag the way the documentation does: --name.
func dashes(arg string) string {
	return "--" + strings.TrimLeft(arg, "-")
}

// suggest is the candidate nearest to word, when one is near enough to be
// a typo (or word is a prefix of exactly one).
func suggest(word string, candidates []string) string {
	best, bestD := "", 3
	var prefixed []string
	for _, c := range candidates {
		if strings.HasPrefix(c, word) && word != "" {
			prefixed = append(prefixed, c)
		}
		limit := 2
		if len(word) <= 3 {
			limit = 1
		}
		if d := editDistance(word, c); d <= limit && d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" && len(prefixed) == 1 {
		return prefixed[0]
	}
	return best
}

// editDistance is the Damerau–Levenshtein distance (optimal string
// alignment): a swapped pair of letters is one edit, as typos are.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// flagError turns the flag package's error into the one-line report, with
// --name spelling and a suggestion for an unknown flag.
func flagError(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + name
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if s := suggest(name, names); s != "" {
			msg += fmt.Sprintf("; did you mean --%s?", s)
		}
		return msg
	}
	return flagNameRE.ReplaceAllString(msg, "${1}--$2")
}

var flagNameRE = regexp.MustCompile(`(flag(?: needs an argument:)? )-([a-z])`)

// printFlags is flag.PrintDefaults with the --name spelling the
// documentation uses.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintln(w, line)
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" && d != "0s" && !strings.Contains(usage, "(default") {
			usage += fmt.Sprintf(" (default %q)", d)
		}
		fmt.Fprintf(w, "    \t%s\n", strings.ReplaceAll(usage, "\n", "\n    \t"))
	})
}

// cmdVersion prints the build: "latchkey v1.2.0 (abc123def456, 2026-12-01T10:00:00Z) go1.26.8 linux/amd64".
func cmdVersion(c *invocation, args []string) int {
	fs := newFlags("version", "version [--json]", "Print latchkey's version, the commit it was built from, and the Go version.", c.stdout, c.stderr)
	asJSON := fs.Bool("json", false, "print the build information as JSON")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	in := buildinfo.Get()
	if *asJSON {
		printJSON(c.stdout, in)
		return exitOK
	}
	when := in.CommitTime
	if in.BuildTime != "" {
		when = "built " + in.BuildTime
	}
	fmt.Fprintf(c.stdout, "latchkey %s (commit %s", in.Version, in.Short())
	if when != "" {
		fmt.Fprintf(c.stdout, ", %s", when)
	}
	fmt.Fprintf(c.stdout, ") %s %s\n", in.GoVersion, in.Platform)
	return exitOK
}

// Shell completion: each script asks "latchkey __complete WORDS…" for
// the candidates after WORDS, so the scripts never go stale.
const (
	bashCompletion = `# latchkey completion for bash: source <(latchkey completion bash)
_latchkey() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	COMPREPLY=($(compgen -W "$(latchkey __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _latchkey latchkey
`
	zshCompletion = `#compdef latchkey
# latchkey completion for zsh: source <(latchkey completion zsh), or save
# as _latchkey in a directory of $fpath.
_latchkey() {
	local -a candidates
	candidates=(${(f)"$(latchkey __complete ${words[2,CURRENT-1]} 2>/dev/null)"})
	compadd -a candidates
	_files
}
if [ "$funcstack[1]" = "_latchkey" ]; then
	_latchkey "$@"
else
	compdef _latchkey latchkey
fi
`
	fishCompletion = `# latchkey completion for fish: latchkey completion fish | source
complete -c latchkey -f -a '(latchkey __complete (commandline -opc)[2..-1])'
`
)

func cmdCompletion(c *invocation, args []string) int {
	fs := newFlags("completion", "completion bash|zsh|fish", `Print a completion script for the shell:

  bash:  source <(latchkey completion bash)     (in ~/.bashrc)
  zsh:   source <(latchkey completion zsh)      (in ~/.zshrc)
  fish:  latchkey completion fish > ~/.config/fish/completions/latchkey.fish`, c.stdout, c.stderr)
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	switch pos[0] {
	case "bash":
		fmt.Fprint(c.stdout, bashCompletion)
	case "zsh":
		fmt.Fprint(c.stdout, zshCompletion)
	case "fish":
		fmt.Fprint(c.stdout, fishCompletion)
	default:
		msg := fmt.Sprintf("unknown shell %q: want bash, zsh or fish", pos[0])
		if s := suggest(pos[0], []string{"bash", "zsh", "fish"}); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		usageError(c.stderr, "latchkey completion", msg)
		return exitUsage
	}
	return exitOK
}

// cmdComplete prints the candidates that may follow args: a group's
// commands, or a leaf's flags (read from its own --help).
func cmdComplete(c *invocation, args []string) int {
	g := commands()
	for _, a := range args {
		if strings.HasPrefix(a, "-") || g.subs == nil {
			continue
		}
		if sub := g.find(a); sub != nil && sub.name != "help" {
			g = sub
		}
	}
	if g.subs != nil {
		for _, n := range g.names() {
			fmt.Fprintln(c.stdout, n)
		}
		return exitOK
	}
	var help bytes.Buffer
	quiet := &invocation{ctx: c.ctx, stdin: strings.NewReader(""), stdout: &help, stderr: &help, getenv: func(string) string { return "" }}
	g.run(quiet, []string{"--help"})
	seen := map[string]bool{}
	for _, m := range completeFlagRE.FindAllStringSubmatch(help.String(), -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			fmt.Fprintln(c.stdout, m[1])
		}
	}
	return exitOK
}

var completeFlagRE = regexp.MustCompile(`(?m)^  (--[a-z][a-z0-9-]*)`)
