package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
)

func cmdAuditTail(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		f      latchkey.AuditFilter
		n      int
		follow bool
		asJSON bool
	)
	fs := newFlags("audit tail", "audit tail [flags]", tailDoc, stdout, stderr)
	fs.IntVar(&n, "n", 20, "how many recent records to show (1-1000)")
	fs.BoolVar(&follow, "f", false, "follow: keep printing new records until interrupted")
	auditFilterFlags(fs, &f)
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	if n < 1 || n > latchkey.MaxPageLimit {
		fmt.Fprintf(stderr, "latchkey audit tail: -n must be between 1 and %d\n", latchkey.MaxPageLimit)
		return exitUsage
	}
	c, ok := clientFor("audit tail", stderr, getenv)
	if !ok {
		return exitUsage
	}
	f.Limit = n
	page, err := c.ListAudit(ctx, f)
	if err != nil {
		return apiExit(stderr, "audit tail", err)
	}
	if !asJSON {
		fmt.Fprintf(stdout, eventFormat, "TIME", "ACTION", "OUTCOME", "REASON", "TOKEN", "CLIENT IP", "SUBJECT", "SCOPES")
	}
	// Seq is commit order: an admin change commits at once, verification
	// records in batches a few milliseconds later. Show the page by time.
	evs := page.Events
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	var last int64
	for i := range evs {
		printEvent(stdout, &evs[i], asJSON)
		last = max(last, evs[i].Seq)
	}
	if !follow {
		return exitOK
	}
	err = c.StreamAudit(ctx, f, last, func(ev *latchkey.AuditEvent) error {
		printEvent(stdout, ev, asJSON)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return apiExit(stderr, "audit tail", err)
	}
	return exitOK
}

const auditVerifyDoc = `
Check the audit log's hash chain on the server (GET /v1/audit/verify).
Each record's hash covers the record and the hash before it, per node, so
an edited, deleted or inserted record breaks the chain from that point.
Exit status 0 when the chain is intact, 1 when it is broken (the first
broken record is named), 3 or 4 when the server cannot answer.`

func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var asJSON bool
	fs := newFlags("audit verify", "audit verify [flags]", auditVerifyDoc, stdout, stderr)
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	c, ok := clientFor("audit verify", stderr, getenv)
	if !ok {
		return exitUsage
	}
	rep, err := c.VerifyAudit(ctx)
	if err != nil {
		return apiExit(stderr, "audit verify", err)
	}
	if asJSON {
		printJSON(stdout, rep)
	} else {
		fmt.Fprintln(stdout, audit.Summary(*rep))
		for _, a := range rep.Anchors {
			fmt.Fprintf(stdout, "  node %q resumes after pruned record %d (anchored %s)\n", a.Node, a.Seq, fmtTime(a.At))
		}
	}
	if !rep.OK {
		return exitRefused
	}
	return exitOK
}

const auditSummaryDoc = `
Count verification attempts by outcome class (GET /v1/audit/summary):
valid, refused (any refusal) and blocked (the source is blocked), today
and per second over the last minute and the last five. Each node counts
in memory and keeps its counts in the store as they change, so they survive
a restart; on PostgreSQL any node adds up every node's. The dashboard's
counters and chart show the same numbers.`

func cmdAuditSummary(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var asJSON bool
	fs := newFlags("audit summary", "audit summary [flags]", auditSummaryDoc, stdout, stderr)
	fs.BoolVar(&asJSON, "json", false, "print the summary as JSON, with the per-second series")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	c, ok := clientFor("audit summary", stderr, getenv)
	if !ok {
		return exitUsage
	}
	sum, err := c.AuditSummary(ctx)
	if err != nil {
		return apiExit(stderr, "audit summary", err)
	}
	if asJSON {
		printJSON(stdout, sum)
		return exitOK
	}
	rate := func(xs []uint64, last int) string {
		var n uint64
		for _, x := range xs[max(0, len(xs)-last):] {
			n += x
		}
		return strconv.FormatFloat(float64(n)/float64(last), 'f', 1, 64) + "/s"
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "OUTCOME\tTODAY\tLAST MINUTE\tLAST 5 MINUTES\n")
	for _, row := range []struct {
		name  string
		today uint64
		xs    []uint64
	}{{"valid", sum.Today.Valid, sum.Series.Valid}, {"refused", sum.Today.Refused, sum.Series.Refused}, {"blocked", sum.Today.Blocked, sum.Series.Blocked}} {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", row.name, row.today, rate(row.xs, 60), rate(row.xs, len(row.xs)))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "today since %s; nodes: %s\n", fmtTime(sum.Today.Since), strings.Join(sum.Nodes, ", "))
	return exitOK
}

const auditExportDoc = `
Write audit records as JSON Lines (one JSON object per line, oldest first),
for archiving or loading into another system. --since is required; the
other filters narrow it down.`

func cmdAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		f            latchkey.AuditFilter
		since, until string
		outPath      string
	)
	fs := newFlags("audit export", "audit export --since TIME [flags]", auditExportDoc, stdout, stderr)
	fs.StringVar(&since, "since", "", "first record time, RFC 3339 (e.g. 2026-11-01T00:00:00Z), or a duration back from now (e.g. 7d)")
	fs.StringVar(&until, "until", "", "end (exclusive), RFC 3339 or a duration back from now")
	auditFilterFlags(fs, &f)
	fs.StringVar(&outPath, "o", "", "write to this `file` instead of standard output")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	if !auditWindow("audit export", since, until, true, &f, stderr) {
		return exitUsage
	}
	c, ok := clientFor("audit export", stderr, getenv)
	if !ok {
		return exitUsage
	}
	w := stdout
	if outPath != "" {
		file, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey audit export: %v\n", err)
			return exitUsage
		}
		defer file.Close()
		w = file
	}
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	f.Ascending, f.Limit = true, latchkey.MaxPageLimit
	n := 0
	for {
		page, err := c.ListAudit(ctx, f)
		if err != nil {
			bw.Flush()
			return apiExit(stderr, "audit export", err)
		}
		for i := range page.Events {
			b, _ := json.Marshal(&page.Events[i])
			bw.Write(append(b, '\n'))
			f.After = page.Events[i].Seq
			n++
		}
		if len(page.Events) < f.Limit {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		fmt.Fprintf(stderr, "latchkey audit export: %v\n", err)
		return exitUsage
	}
	if outPath != "" {
		fmt.Fprintf(stderr, "exported %d records to %s\n", n, outPath)
	}
	return exitOK
}

// auditFilterFlags registers the audit filters the audit commands share.
func auditFilterFlags(fs *flag.FlagSet, f *latchkey.AuditFilter) {
	fs.StringVar(&f.Keyspace, "keyspace", "", "only records about this keyspace's tokens and changes")
	fs.StringVar(&f.TokenID, "token-id", "", "only records about this token id")
	fs.StringVar(&f.Subject, "subject", "", "only records about this subject")
	fs.StringVar(&f.Outcome, "outcome", "", "only this outcome, e.g. VALID, NOT_FOUND, REVOKED, OK")
	fs.StringVar(&f.Kind, "kind", "", "only verify, admin, session or detect records")
	fs.StringVar(&f.Node, "node", "", "only records written by this node")
	fs.Var(sourceFlag{&f.Source}, "client-ip", "only records from this client `address or CIDR prefix` (e.g. 203.0.113.7, 10.0.0.0/8)")
}

// sourceFlag is a --client-ip flag: an address or a CIDR prefix.
type sourceFlag struct{ p *netip.Prefix }

func (f sourceFlag) String() string {
	if f.p == nil || !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}

func (f sourceFlag) Set(s string) error {
	p, err := latchkey.ParseSource(s)
	if err != nil {
		return errors.New("must be an IP address or a CIDR prefix, e.g. 203.0.113.7 or 10.0.0.0/8")
	}
	*f.p = p
	return nil
}

const auditSourcesDoc = `
Who used a token (or anything else the filters select) from where: the
matching audit records tallied by client address on the server (GET
/v1/audit/sources), busiest first, with the first and last attempt and
the count of each outcome. The window defaults to the last 24 hours; at
most 1,000,000 records are counted (narrow the window past that).

  latchkey audit sources --token-id Vb3kGQ2ZtW8nR1xa --since 1h
  latchkey audit sources --client-ip 10.0.0.0/8 --outcome NOT_FOUND`

func cmdAuditSources(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		f            latchkey.AuditFilter
		since, until string
		asJSON       bool
	)
	fs := newFlags("audit sources", "audit sources [flags]", auditSourcesDoc, stdout, stderr)
	fs.StringVar(&since, "since", "24h", "window start, RFC 3339 or a duration back from now (e.g. 1h, 7d)")
	fs.StringVar(&until, "until", "", "window end (exclusive), RFC 3339 or a duration back from now")
	auditFilterFlags(fs, &f)
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	if !auditWindow("audit sources", since, until, false, &f, stderr) {
		return exitUsage
	}
	c, ok := clientFor("audit sources", stderr, getenv)
	if !ok {
		return exitUsage
	}
	rep, err := c.AuditSources(ctx, f)
	if err != nil {
		return apiExit(stderr, "audit sources", err)
	}
	if asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tATTEMPTS\tFIRST SEEN (UTC)\tLAST SEEN (UTC)\tOUTCOMES")
	for _, u := range rep.Sources {
		addr := u.Address
		if addr == "" {
			addr = "(none)"
		}
		outs := make([]string, 0, len(u.Outcomes))
		for o, n := range u.Outcomes {
			outs = append(outs, fmt.Sprintf("%s %d", o, n))
		}
		sort.Strings(outs)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", addr, u.Attempts, u.FirstSeen.UTC().Format(time.DateTime), u.LastSeen.UTC().Format(time.DateTime), strings.Join(outs, ", "))
	}
	tw.Flush()
	more := ""
	if rep.Truncated {
		more = fmt.Sprintf(" (the busiest %d shown)", len(rep.Sources))
	}
	fmt.Fprintf(stdout, "%d records from %d sources%s\n", rep.Records, rep.Total, more)
	return exitOK
}

// auditWindow reads --since and --until into f (since required when
// required), saying what is wrong on stderr.
func auditWindow(cmd, since, until string, required bool, f *latchkey.AuditFilter, stderr io.Writer) bool {
	var err error
	if f.Since, err = timeOrAgo(since); err != nil || required && since == "" {
		fmt.Fprintf(stderr, "latchkey %s: --since must be an RFC 3339 time or a duration such as 7d\n", cmd)
		return false
	}
	if f.Until, err = timeOrAgo(until); err != nil {
		fmt.Fprintf(stderr, "latchkey %s: --until must be an RFC 3339 time or a duration such as 1d\n", cmd)
		return false
	}
	return true
}

// timeOrAgo reads an RFC 3339 time or a duration back from now ("7d").
func timeOrAgo(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := latchkey.ParseDuration(s)
	if err != nil {
		return time.Time{}, err
	}
	return time.Now().Add(-d), nil
}

// eventFormat has fixed widths, so that records printed while following
// line up with the header printed first.
const eventFormat = "%-23s  %-20s  %-18s  %-16s  %-16s  %-15s  %-16s  %s\n"

func printEvent(stdout io.Writer, ev *latchkey.AuditEvent, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(stdout, "%s\n", b)
		return
	}
	fmt.Fprintf(stdout, eventFormat, ev.Time.Local().Format("2006-01-02 15:04:05.000"), ev.Action,
		ev.Outcome, orDash(ev.Reason), orDash(ev.TokenID), orDash(ev.ClientIP), orDash(ev.Subject),
		orDash(strings.Join(ev.Scopes, ",")))
}
