package tokenrow

import (
	"cmp"
	"context"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/latchkeyhq/latchkey"
)

// SelectColumns is what Row scans, in order: the same in both stores. uses
// comes from the row of the token's rotation series, which holds the
// shared budget.
const SelectColumns = `seq, id, prefix, name, subject, scopes, tags, meta, created_at, created_by,
	expires_at, not_before, status, revoked_at, revoked_by, revoked_reason, last_used_at, version, hash,
	constraints, max_uses, (SELECT h.uses FROM tokens h WHERE h.id = tokens.series_id),
	suspended_at, suspended_by, suspended_reason, suspended_via,
	parent_id, ancestors, predecessor_id, successor_id, rotated_at, series_id, inherited, keyspace, roles`

// The sort keys as SQL, the same expressions as the indexes on them
// (tokens_expires, tokens_last_used), so that a sorted page is a range of
// an index in both stores.
var sortExpr = map[string]string{
	latchkey.SortCreated:  "seq",
	latchkey.SortExpires:  "COALESCE(expires_at, " + strconv.FormatInt(latchkey.NoExpiry, 10) + ")",
	latchkey.SortLastUsed: "COALESCE(last_used_at, " + strconv.Itoa(latchkey.NeverUsed) + ")",
}

// Dialect is how a store writes the parts of a listing that differ.
type Dialect struct {
	// Arg binds v and returns its placeholder.
	Arg func(v any) string
	// HasTag is the condition "the token has the tag bound at ph".
	HasTag func(ph string) string
}

// Listing is a token listing's SQL, built once for a filter.
type Listing struct {
	f     latchkey.TokenFilter
	sort  string
	desc  bool
	limit int
	words []string // of the search
}

// NewListing checks f's order and search.
func NewListing(f latchkey.TokenFilter) (*Listing, error) {
	sort, desc, err := f.Ordering()
	if err != nil {
		return nil, err
	}
	words, err := latchkey.ParseSearch(f.Search)
	if err != nil {
		return nil, err
	}
	return &Listing{f: f, sort: sort, desc: desc, limit: latchkey.PageLimit(f.Limit), words: words}, nil
}

// Page returns the query for a page (one row more than the page, which
// says whether another follows), binding its arguments through d.
//
// A page after a cursor in the expiry or last-use order is two index
// seeks: the rest of the cursor's tie (the same key, seq beyond) and the
// keys beyond it, each stopped at a page, which Finish merges. One range
// "key >= k" would read every tie before the cursor first, and ties are
// common: a fifth of tokens never expire, a quarter were never used.
// (Neither store seeks an index on (key, seq) by a row value.)
func (l *Listing) Page(d Dialect) (string, error) {
	dir, past := " ASC", " > "
	if l.desc {
		dir, past = " DESC", " < "
	}
	sel := func(conds []string, order string) string {
		where := ""
		if len(conds) > 0 {
			where = " WHERE " + strings.Join(conds, " AND ")
		}
		if l.sorts() {
			// The matches are sorted by their key alone and only the
			// page's rows are then read whole: sorting whole rows (and
			// reading each one's budget) cost PostgreSQL 167 ms for a
			// search matching 25,000 of 1,000,000 tokens, this 112 ms
			// (docs/benchmarks.md).
			return `SELECT ` + SelectColumns + ` FROM tokens WHERE seq IN (SELECT seq FROM tokens` + where +
				" ORDER BY " + order + " LIMIT " + d.Arg(l.limit+1) + ") ORDER BY " + order
		}
		return `SELECT ` + SelectColumns + ` FROM tokens` + where + " ORDER BY " + order + " LIMIT " + d.Arg(l.limit+1)
	}
	if l.f.Cursor == "" || l.sort == latchkey.SortCreated {
		conds := l.conds(d)
		if l.f.Cursor != "" {
			_, seq, err := latchkey.DecodeListCursor(l.f.Cursor, l.sort, l.desc)
			if err != nil {
				return "", err
			}
			conds = append(conds, "seq"+past+d.Arg(seq))
		}
		if l.sort == latchkey.SortCreated {
			return sel(conds, "seq"+dir), nil
		}
		return sel(conds, sortExpr[l.sort]+dir+", seq"+dir), nil
	}
	key, seq, err := latchkey.DecodeListCursor(l.f.Cursor, l.sort, l.desc)
	if err != nil {
		return "", err
	}
	x := sortExpr[l.sort]
	tie := sel(append(l.conds(d), x+" = "+d.Arg(key), "seq"+past+d.Arg(seq)), "seq"+dir)
	beyond := sel(append(l.conds(d), x+past+d.Arg(key)), x+dir+", seq"+dir)
	return "SELECT * FROM (" + tie + ") AS tie UNION ALL SELECT * FROM (" + beyond + ") AS beyond", nil
}

// sorts says the listing may have to sort its matches: a search, or an
// exact filter, in another order than seq's. (An order alone, or with
// the expiry and use filters, is a range of its own index.)
func (l *Listing) sorts() bool {
	f := &l.f
	return l.sort != latchkey.SortCreated &&
		(f.Search != "" || f.Keyspace != "" || f.Subject != "" || f.Status != "" || f.Tag != "" || f.Prefix != "" || f.ParentID != "")
}

// searchOnly says the filter is a search and nothing else.
func (l *Listing) searchOnly() bool {
	g := l.f
	g.Search, g.Sort, g.Order, g.Cursor, g.Limit, g.Count = "", "", "", "", 0, false
	return reflect.ValueOf(g).IsZero()
}

// Count returns the query counting every token the filter matches. A
// search alone is counted in token_terms, without reading a token (at a
// million tokens, a word of 25,000: 10 ms instead of 40 in SQLite, 7 ms
// instead of 97 in PostgreSQL).
func (l *Listing) Count(d Dialect) string {
	if len(l.words) > 0 && l.searchOnly() {
		parts := make([]string, len(l.words))
		for i, w := range l.words {
			parts[i] = "SELECT DISTINCT seq FROM token_terms WHERE term >= " + d.Arg(w) + " AND term < " + d.Arg(latchkey.PrefixEnd(w))
		}
		return "SELECT count(*) FROM (" + strings.Join(parts, " INTERSECT ") + ") AS matches"
	}
	q := `SELECT count(*) FROM tokens`
	if conds := l.conds(d); len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	return q
}

// Finish makes the page of the rows Page's query returned: in the
// listing's order (the two parts of a page after a cursor are merged
// here, not trusted to arrive in order), at most a page, and the cursor
// after its last token when more follow.
func (l *Listing) Finish(toks []*latchkey.Token, seqs []int64) latchkey.TokenPage {
	if l.f.Cursor != "" && l.sort != latchkey.SortCreated {
		idx := make([]int, len(toks))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int {
			c := cmp.Or(cmp.Compare(latchkey.SortKey(toks[a], l.sort, seqs[a]), latchkey.SortKey(toks[b], l.sort, seqs[b])), cmp.Compare(seqs[a], seqs[b]))
			if l.desc {
				return -c
			}
			return c
		})
		st, ss := make([]*latchkey.Token, len(idx)), make([]int64, len(idx))
		for i, j := range idx {
			st[i], ss[i] = toks[j], seqs[j]
		}
		toks, seqs = st, ss
	}
	page := latchkey.TokenPage{Tokens: toks}
	if len(toks) > l.limit {
		page.Tokens = toks[:l.limit]
		last := l.limit - 1
		page.Next = latchkey.EncodeListCursor(l.sort, l.desc, latchkey.SortKey(toks[last], l.sort, seqs[last]), seqs[last])
	}
	return page
}

// conds are the filters' conditions, bound through d.
func (l *Listing) conds(d Dialect) []string {
	f := &l.f
	var where []string
	eq := func(col, v string) {
		if v != "" {
			where = append(where, col+" = "+d.Arg(v))
		}
	}
	eq("keyspace", f.Keyspace)
	eq("subject", f.Subject)
	eq("status", string(f.Status))
	eq("prefix", f.Prefix)
	eq("parent_id", f.ParentID)
	if f.Tag != "" {
		where = append(where, d.HasTag(d.Arg(f.Tag)))
	}
	now := func() string { return d.Arg(f.Now.UnixMicro()) }
	if !f.RotationDueBefore.IsZero() {
		where = append(where, "status = 'active' AND successor_id = '' AND created_at < "+d.Arg(f.RotationDueBefore.UnixMicro())+
			" AND (expires_at IS NULL OR expires_at > "+now()+")")
	}
	if f.Expired {
		where = append(where, "status = 'active' AND expires_at IS NOT NULL AND expires_at <= "+now())
	}
	if f.Rotated {
		where = append(where, "status = 'active' AND successor_id <> '' AND (expires_at IS NULL OR expires_at > "+now()+")")
	}
	if !f.ExpiresBefore.IsZero() {
		// On the sort expression, so that the index on it answers; the
		// status is written so that no index is taken for it (most tokens
		// are active: SQLite, without statistics, would take
		// tokens_status and sort all of them).
		x := sortExpr[latchkey.SortExpires]
		where = append(where, "status || '' = 'active' AND "+x+" > "+now()+" AND "+x+" <= "+d.Arg(f.ExpiresBefore.UnixMicro()))
	}
	if !f.UnusedBefore.IsZero() {
		// A used token was created before its last use.
		before := f.UnusedBefore.UnixMicro()
		where = append(where, sortExpr[latchkey.SortLastUsed]+" < "+d.Arg(before)+" AND created_at < "+d.Arg(before))
	}
	if f.NeverUsed {
		where = append(where, sortExpr[latchkey.SortLastUsed]+" = "+strconv.Itoa(latchkey.NeverUsed))
	}
	for _, w := range l.words {
		where = append(where, "seq IN (SELECT seq FROM token_terms WHERE term >= "+d.Arg(w)+" AND term < "+d.Arg(latchkey.PrefixEnd(w))+")")
	}
	return where
}

// FillPage is how many tokens FillTerms reads at a time.
const FillPage = 1000

// FillTerms gives stored tokens their search terms (a migration's step):
// page reads the tokens after a sequence number, in order, and set
// stores one token's terms.
func FillTerms(ctx context.Context, page func(after int64) ([]*latchkey.Token, []int64, error), set func(seq int64, terms string) error) error {
	for after := int64(0); ; {
		toks, seqs, err := page(after)
		if err != nil {
			return err
		}
		for i, t := range toks {
			c, err := Encode(t)
			if err != nil {
				return err
			}
			if err := set(seqs[i], c.Terms); err != nil {
				return err
			}
			after = seqs[i]
		}
		if len(toks) < FillPage {
			return ctx.Err()
		}
	}
}
