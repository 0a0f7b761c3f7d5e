package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/buildinfo"
)

// offline runs the CLI with no server and an empty environment.
func offline(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &out, &errb, func(string) string { return "" })
	return code, out.String(), errb.String()
}

// A mistake gets one line saying what is wrong (with a suggestion when
// one is near) and where help is, and exit status 2; never the whole
// usage.
func TestCLIMistakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tokn", "list"}, `latchkey: unknown command "tokn"; did you mean "token"?`},
		{[]string{"token", "crate"}, `latchkey token: unknown command "crate"; did you mean "create"?`},
		{[]string{"token", "list", "--limt", "3"}, `latchkey token list: unknown flag --limt; did you mean --limit?`},
		{[]string{"token", "list", "--sbject=x"}, `latchkey token list: unknown flag --sbject; did you mean --subject?`},
		{[]string{"keyspace", "cretae", "x"}, `latchkey keyspace: unknown command "cretae"; did you mean "create"?`},
		{[]string{"serve", "--lissten", "x"}, `latchkey serve: unknown flag --lissten; did you mean --listen?`},
		{[]string{"token", "show"}, `latchkey token show: expected 1 argument(s), got 0`},
		{[]string{"token", "list", "--limit", "many"}, `latchkey token list: invalid value "many" for flag --limit`},
		{[]string{"token", "list", "--limit"}, `latchkey token list: flag needs an argument: --limit`},
		{[]string{"token"}, `latchkey token: expected a command: create, list`},
		{[]string{"completion", "bsh"}, `latchkey completion: unknown shell "bsh": want bash, zsh or fish; did you mean "bash"?`},
		{[]string{"xyzzy"}, `latchkey: unknown command "xyzzy"`},
	} {
		code, out, errs := offline(c.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != exitUsage || !strings.HasPrefix(errs, c.want) || len(lines) != 2 || !strings.HasPrefix(lines[1], "Run 'latchkey") || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q, then the help line", c.args, code, out, errs, c.want)
		}
		if strings.Contains(errs, "did you mean") != strings.Contains(c.want, "did you mean") {
			t.Errorf("%q: suggestion %q", c.args, errs)
		}
	}
	// "xyzzy" is near nothing: no suggestion.
	if _, _, errs := offline("xyzzy"); strings.Contains(errs, "did you mean") {
		t.Errorf("suggested for xyzzy: %s", errs)
	}
}

// --help, -h and help work at every level and print to stdout with exit
// 0; every flag is shown as --name.
func TestCLIHelpEverywhere(t *testing.T) {
	t.Parallel()
	singleDash := regexp.MustCompile(`(?m)^  -[a-z]`)
	var walk func(path []string, c *command)
	walk = func(path []string, c *command) {
		if c.hidden || c.name == "help" {
			return
		}
		forms := [][]string{append(path[1:len(path):len(path)], "--help"), append(append([]string{"help"}, path[1:]...), "-h")}
		if len(path) == 1 {
			forms = [][]string{{"--help"}, {"help"}}
		}
		for _, args := range forms {
			code, out, errs := offline(args...)
			if code != exitOK || !strings.Contains(out, "Usage") || errs != "" {
				t.Errorf("%q: exit %d, stderr %q, stdout %.200q", args, code, errs, out)
			}
			if singleDash.MatchString(out) {
				t.Errorf("%q: help shows a -flag:\n%s", args, out)
			}
		}
		for _, s := range c.subs {
			walk(append(path[:len(path):len(path)], s.name), s)
		}
	}
	walk([]string{"latchkey"}, commands())
	// The top-level usage names every command.
	_, out, _ := offline("help")
	for _, name := range commands().names() {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("the usage does not list %q", name)
		}
	}
	// A group's help lists its commands.
	_, out, _ = offline("token", "--help")
	for _, v := range []string{"create", "list", "revoke", "request"} {
		if !strings.Contains(out, "  "+v+" ") {
			t.Errorf("token --help does not list %s:\n%s", v, out)
		}
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"crate", "create", 1}, {"tokn", "token", 1}, {"lsit", "list", 1}, {"abc", "xyz", 3}, {"", "ab", 2}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
	if s := suggest("rev", []string{"revoke", "resume"}); s != "revoke" {
		t.Errorf("a unique prefix: %q", s)
	}
	if s := suggest("re", []string{"revoke", "resume", "request"}); s != "" {
		t.Errorf("an ambiguous prefix suggested %q", s)
	}
}

// version prints the module version, the commit and the Go version, from
// the build information of a real binary built from this checkout.
func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := offline("version")
	if code != 0 || !strings.HasPrefix(out, "latchkey (devel) (commit ") || !strings.Contains(out, buildinfo.Get().GoVersion) {
		t.Errorf("version: %d %q", code, out)
	}
	bin := filepath.Join(t.TempDir(), "latchkey")
	build := exec.Command("go", "build", "-buildvcs=auto", "-ldflags",
		"-X github.com/latchkeyhq/latchkey/internal/buildinfo.version=v9.9.9 -X github.com/latchkeyhq/latchkey/internal/buildinfo.buildTime=2026-12-01T00:00:00Z",
		"-o", bin, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	b, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var in buildinfo.Info
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if in.Version != "v9.9.9" || in.BuildTime != "2026-12-01T00:00:00Z" || in.GoVersion == "" || in.Platform == "" {
		t.Errorf("version --json: %+v", in)
	}
	// In a git checkout, the commit is the one built.
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		if in.Revision != strings.TrimSpace(string(head)) {
			t.Errorf("revision %q, want HEAD %s", in.Revision, head)
		}
	} else if os.Getenv("CI") != "" {
		t.Errorf("no git in CI: %v", err)
	}
}

// completion: the bash script completes commands and flags through the
// real binary.
func TestCompletion(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		requireService(t, "bash")
	}
	bin := buildBinary(t)
	for _, c := range []struct {
		words string
		cword int
		want  []string
	}{
		{"latchkey tok", 1, []string{"token"}},
		{"latchkey token cr", 2, []string{"create"}},
		{"latchkey token list --li", 3, []string{"--limit"}},
		{"latchkey serve --log-f", 2, []string{"--log-format"}},
	} {
		script := `source <("$LK" completion bash); COMP_WORDS=(` + c.words + `); COMP_CWORD=` + string(rune('0'+c.cword)) + `; _latchkey; echo "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append(os.Environ(), "LK="+bin, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Join(strings.Fields(string(out)), " ") != strings.Join(c.want, " ") {
			t.Errorf("%q: %v %q, want %q", c.words, err, out, c.want)
		}
	}
	// zsh parses its script; fish completes with it.
	code, out, _ := offline("completion", "zsh")
	if zsh, err := exec.LookPath("zsh"); err != nil {
		requireService(t, "zsh")
	} else {
		cmd := exec.Command(zsh, "-n")
		cmd.Stdin = strings.NewReader(out)
		if b, err := cmd.CombinedOutput(); err != nil || code != 0 || !strings.Contains(out, "latchkey __complete") {
			t.Errorf("zsh rejects its script: %d %v %s", code, err, b)
		}
	}
	fish, err := exec.LookPath("fish")
	if err != nil {
		requireService(t, "fish")
		return
	}
	cmd := exec.Command(fish, "-c", `latchkey completion fish | source; complete -C "latchkey token cr"; complete -C "latchkey token list --li"`)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if b, err := cmd.CombinedOutput(); err != nil || strings.Fields(string(b))[0] != "create" || !strings.Contains(string(b), "--limit") {
		t.Errorf("fish completion: %v %q", err, b)
	}
}

// token list and show print the effective status, and --status expired
// selects the tokens that have expired.
func TestCLIEffectiveStatus(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	clock := &fakeClock{t: time.Now()}
	ts.d.svc.Now = clock.Now
	live, err := c.CreateToken(ctx, client.CreateRequest{Name: "live", Scopes: []string{"a:read"}, TTL: "3h"})
	if err != nil {
		t.Fatal(err)
	}
	short, err := c.CreateToken(ctx, client.CreateRequest{Name: "short", Scopes: []string{"a:read"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Hour)
	code, out, errs := cli(t, ts.url, ts.root, "token", "list", "--status", "expired")
	if code != 0 || !strings.Contains(out, short.Token.ID) || strings.Contains(out, live.Token.ID) || !strings.Contains(out, " expired ") {
		t.Errorf("list --status expired: %d %s %s", code, out, errs)
	}
	code, out, _ = cli(t, ts.url, ts.root, "token", "show", short.Token.ID)
	if code != 0 || !regexp.MustCompile(`status\s+expired \(active\)`).MatchString(out) {
		t.Errorf("show: %s", out)
	}
	code, out, _ = cli(t, ts.url, ts.root, "token", "list")
	if code != 0 || !regexp.MustCompile(short.Token.ID+`\s+short\s+-\s+expired`).MatchString(out) || !regexp.MustCompile(live.Token.ID+`\s+live\s+-\s+active`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if code, _, errs := cli(t, ts.url, ts.root, "token", "list", "--status", "gone"); code != exitUsage || !strings.Contains(errs, "expired or rotated") {
		t.Errorf("a bad status: %d %s", code, errs)
	}
}
