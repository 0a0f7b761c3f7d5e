package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
)

// Audit records are kept in chunks (docs/architecture.md §5): a row of
// audit_chunks holds a run of consecutive records of one node, their
// compact encoding in one blob (auditrow), the node's chain hash before
// the first and after the last, and the run's time bounds. SQLite's cost
// per row (the statement, the B-tree insert, the page writes) is paid
// once per chunk instead of once per record; audit_tokens indexes which
// chunks hold records of each token. Everything else a query filters on
// is matched while the chunks are decoded, newest first, which is how the
// unindexed filters ran before chunks too.

// AppendAudit stores evs in one transaction and sets each event's Seq
// (not its Hash: ListAudit derives that from the chunk's chain).
func (db *DB) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	defer tx.Rollback()
	var fresh newSources
	if err := db.insertAudit(ctx, tx, evs, &fresh); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	db.sources.committed(&fresh)
	return nil
}

// sourceCache remembers, for the newest segment written, the client
// addresses (as recorded) its audit_sources rows are known to hold
// (committed), so that the writer does not insert them again for every
// chunk: an ignored insert still costs SQLite a probe per key, which
// doubled the writer's cost per record. Only AppendAudit, whose commit it
// sees, consults and fills it; PruneAudit empties it under the same lock
// as its commit.
type sourceCache struct {
	mu    sync.Mutex
	seg   int64
	addrs map[string]struct{}
}

// newSources are the addresses a transaction indexed, per segment, noted
// in the cache once it commits.
type newSources struct {
	seg   []int64
	addrs [][]string
}

// maxCachedSources bounds the cache (a segment with more addresses
// inserts the rest again each chunk; INSERT OR IGNORE keeps that right).
const maxCachedSources = 1 << 16

// unknown is the client addresses of run (of segment seg) not known to
// be indexed, without repeats; a nil cache knows none.
func (c *sourceCache) unknown(seg int64, run []latchkey.AuditEvent) []string {
	var known map[string]struct{}
	if c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if seg == c.seg {
			known = c.addrs
		}
	}
	var out []string
	prev := ""
	for i := range run {
		ip := run[i].ClientIP
		if ip == "" || ip == prev {
			continue
		}
		prev = ip
		if _, ok := known[ip]; !ok {
			out = append(out, ip)
		}
	}
	return compact(out)
}

func (c *sourceCache) committed(n *newSources) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, seg := range n.seg {
		if seg > c.seg || c.addrs == nil {
			c.seg, c.addrs = seg, map[string]struct{}{}
		}
		if seg == c.seg {
			for _, ip := range n.addrs[i] {
				if len(c.addrs) < maxCachedSources {
					c.addrs[ip] = struct{}{}
				}
			}
		}
	}
}

func (c *sourceCache) forget() {
	c.addrs = nil
}

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// insertAudit stores evs in tx as chunks, one per run of consecutive
// records of the same node (at most auditrow.MaxChunk), each linked to
// the previous record of its node. The writer connection serialises
// transactions, so reading the last hash and appending after it cannot
// interleave with another writer.
//
// fresh, when not nil, has the source cache skip the addresses already
// indexed and collects those inserted (AppendAudit notes them once it
// has committed).
func (db *DB) insertAudit(ctx context.Context, tx *sql.Tx, evs []latchkey.AuditEvent, fresh *newSources) error {
	next, err := nextAuditSeq(ctx, tx)
	if err != nil {
		return err
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	var heads map[string][sha256.Size]byte // node → hash after its latest record, once read
	for len(evs) > 0 {
		node := evs[0].Node
		n := 1
		for n < len(evs) && n < auditrow.MaxChunk && evs[n].Node == node {
			n++
		}
		run := evs[:n]
		evs = evs[n:]
		prev, ok := heads[node]
		if !ok {
			if prev, err = lastHash(ctx, tx, node); err != nil {
				return err
			}
		}
		ch := auditrow.NewChain(auditrow.ChainV2, prev, node)
		var enc auditrow.Writer
		b := (*bp)[:0]
		tmin, tmax := int64(1<<63-1), int64(-1<<63)
		var h [sha256.Size]byte
		for i := range run {
			ev := &run[i]
			ev.Time = latchkey.TimeOf(ev.Time)
			ev.Seq = next + int64(i)
			start := len(b)
			b = enc.Append(b, ev)
			h = ch.Next(ev, b[start:]) // ev.Hash is left unset: ListAudit derives it
			t := micros(ev.Time)
			tmin, tmax = min(tmin, t), max(tmax, t)
		}
		*bp = b
		last := next + int64(n) - 1
		if _, err := tx.StmtContext(ctx, db.insertChunk).ExecContext(ctx, last, n, node, tmin, tmax, auditrow.ChainV2, prev[:], h[:], b); err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		if err := db.indexTokens(ctx, tx, run, last, fresh); err != nil {
			return err
		}
		if heads == nil {
			heads = map[string][sha256.Size]byte{}
		}
		heads[node] = h
		next = last + 1
	}
	return nil
}

// keysPerInsert is how many (key, chunk) pairs one index INSERT carries.
const keysPerInsert = 32

// indexTokens notes in audit_tokens that the chunk ending at last holds
// records of each token in run (one row per token and chunk), and in
// audit_sources that its segment holds records from each client address
// (one row per address and segment).
func (db *DB) indexTokens(ctx context.Context, tx *sql.Tx, run []latchkey.AuditEvent, last int64, fresh *newSources) error {
	var ids []string
	for i := range run {
		if id := run[i].TokenID; id != "" && (len(ids) == 0 || ids[len(ids)-1] != id) {
			ids = append(ids, id)
		}
	}
	if err := indexKeys(ctx, tx, compact(ids), db.insertToken, db.insertTokens, last); err != nil {
		return err
	}
	seg := last >> sourceSegBits
	var c *sourceCache
	if fresh != nil {
		c = &db.sources
	}
	addrs := c.unknown(seg, run)
	if len(addrs) == 0 {
		return nil
	}
	if keys := sourceKeys(addrs); len(keys) > 0 {
		list, _ := json.Marshal(keys)
		if _, err := tx.StmtContext(ctx, db.insertSources).ExecContext(ctx, string(list), seg); err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
	}
	if fresh != nil {
		fresh.seg, fresh.addrs = append(fresh.seg, seg), append(fresh.addrs, addrs)
	}
	return nil
}

// sourceKeys is the addresses among ips as sourceIndexInsert takes
// them (hex keys, sorted, no repeats), all of a chunk's in one statement:
// a statement per handful of keys cost the writer more than the records.
func sourceKeys(ips []string) []string {
	keys := make([]string, 0, len(ips))
	for _, ip := range compact(ips) {
		if k, ok := latchkey.SourceKey(ip); ok {
			keys = append(keys, hex.EncodeToString(k[:]))
		}
	}
	return compact(keys)
}

// compact sorts vs and drops repeats.
func compact(vs []string) []string {
	if len(vs) > 1 {
		slices.Sort(vs)
		vs = slices.Compact(vs)
	}
	return vs
}

// indexKeys inserts (key, last) for each of keys, keysPerInsert to a
// statement (many) while there are that many, then one at a time (one).
func indexKeys(ctx context.Context, tx *sql.Tx, keys []string, one, many *sql.Stmt, last int64) error {
	args := make([]any, 0, 2*keysPerInsert)
	for len(keys) > 0 {
		n, stmt := keysPerInsert, many
		if len(keys) < n {
			n, stmt = 1, one
		}
		args = args[:0]
		for _, k := range keys[:n] {
			args = append(args, k, last)
		}
		if _, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

// tokenIndexInsert is the INSERT of n (token, chunk) pairs.
func tokenIndexInsert(n int) string {
	return `INSERT OR IGNORE INTO audit_tokens (token_id, last_seq) VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?),", n), ",")
}

// sourceIndexInsert notes that segment ?2 holds records from each
// address of ?1, a JSON array of hex keys (latchkey.SourceKey).
const sourceIndexInsert = `INSERT OR IGNORE INTO audit_sources (ip, seg) SELECT unhex(value), ?2 FROM json_each(?1)`

const chunkInsert = `INSERT INTO audit_chunks (last_seq, n, node, t_min, t_max, chain, prev, hash, recs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

// nextAuditSeq is the sequence number of the next record: one past the
// last record, or past the last pruned one (an anchor), so that a number
// is never given twice even once every record is pruned.
func nextAuditSeq(ctx context.Context, q queryer) (int64, error) {
	var last sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(coalesce((SELECT max(last_seq) FROM audit_chunks), 0),
		coalesce((SELECT max(seq) FROM audit_anchors), 0))`).Scan(&last); err != nil {
		return 0, fmt.Errorf("sqlite: audit sequence: %w", err)
	}
	return last.Int64 + 1, nil
}

// lastHash is the hash the next record of node links to: its latest
// chunk's, else its anchor's, else zero (the start of the chain).
func lastHash(ctx context.Context, q queryer, node string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	var b []byte
	err := q.QueryRowContext(ctx, `SELECT hash FROM audit_chunks WHERE node = ? ORDER BY last_seq DESC LIMIT 1`, node).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		var hx string
		err = q.QueryRowContext(ctx, `SELECT hash FROM audit_anchors WHERE node = ?`, node).Scan(&hx)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return h, nil
		case err == nil:
			return auditrow.ParseHash(hx), nil
		}
	}
	if err != nil {
		return h, fmt.Errorf("sqlite: audit chain: %w", err)
	}
	copy(h[:], b)
	return h, nil
}

// chunk is one row of audit_chunks.
type chunk struct {
	last, n    int64
	node       string
	chain      int
	prev, hash [sha256.Size]byte
	recs       []byte
}

const chunkColumns = `last_seq, n, node, chain, prev, hash, recs`

func scanChunk(rows *sql.Rows, c *chunk) error {
	var prev, hash []byte
	if err := rows.Scan(&c.last, &c.n, &c.node, &c.chain, &prev, &hash, &c.recs); err != nil {
		return err
	}
	copy(c.prev[:], prev)
	copy(c.hash[:], hash)
	return nil
}

// decode returns the chunk's records with their Seq and Node set, and
// each one's encoding for hashes (which hashes derives from the chain, so
// only a page that shows records pays for them).
func (c *chunk) decode() ([]latchkey.AuditEvent, [][]byte, error) {
	if c.n < 1 || c.n > auditrow.MaxChunk {
		return nil, nil, auditrow.ErrCorrupt
	}
	evs := make([]latchkey.AuditEvent, 0, c.n)
	encs := make([][]byte, 0, c.n)
	r := auditrow.NewReader(c.recs)
	for !r.Done() {
		if int64(len(evs)) == c.n {
			return nil, nil, auditrow.ErrCorrupt
		}
		var ev latchkey.AuditEvent
		enc, err := r.Next(&ev)
		if err != nil {
			return nil, nil, err
		}
		ev.Seq, ev.Node = c.last-c.n+1+int64(len(evs)), c.node
		evs = append(evs, ev)
		encs = append(encs, enc)
	}
	if int64(len(evs)) != c.n {
		return nil, nil, auditrow.ErrCorrupt
	}
	return evs, encs, nil
}

// hashes sets the Hash of evs[:upto+1] from the chunk's chain, and
// returns the hash after the last record it hashed.
func (c *chunk) hashes(evs []latchkey.AuditEvent, encs [][]byte, upto int) [sha256.Size]byte {
	ch := auditrow.NewChain(c.chain, c.prev, c.node)
	var h [sha256.Size]byte
	for i := 0; i <= upto && i < len(evs); i++ {
		h = ch.Next(&evs[i], encs[i])
		evs[i].Hash = auditrow.Hex(h)
	}
	return h
}

// AuditNodes lists the nodes with records or anchors.
func (db *DB) AuditNodes(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT node FROM audit_chunks UNION SELECT node FROM audit_anchors ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit nodes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// AuditAnchors lists the anchors of pruned chains.
func (db *DB) AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT node, seq, hash, at FROM audit_anchors ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit anchors: %w", err)
	}
	defer rows.Close()
	var out []latchkey.AuditAnchor
	for rows.Next() {
		var a latchkey.AuditAnchor
		var at int64
		if err := rows.Scan(&a.Node, &a.Seq, &a.Hash, &at); err != nil {
			return nil, err
		}
		a.At = time.UnixMicro(at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// PruneAudit deletes records older than before, node by node, each node
// in one transaction: archive sees them first, then the anchor moves to
// the last one and they are deleted. Records go in whole chunks: a chunk
// that holds any record at or after before stays, with its older records
// (at most one chunk per node: a flush interval's worth).
func (db *DB) PruneAudit(ctx context.Context, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	nodes, err := db.AuditNodes(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, node := range nodes {
		n, err := db.pruneNode(ctx, node, before, archive)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (db *DB) pruneNode(ctx context.Context, node string, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	defer tx.Rollback()
	// The cut: the node's chunks in seq order up to the first that holds a
	// record at or after before (commit order and time order differ a
	// little, so no younger record goes).
	var cut sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT max(last_seq) FROM audit_chunks WHERE node = ?1 AND t_max < ?2
		AND last_seq < coalesce((SELECT min(last_seq) FROM audit_chunks WHERE node = ?1 AND t_max >= ?2), 1 << 62)`,
		node, micros(before)).Scan(&cut)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if !cut.Valid {
		return 0, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+chunkColumns+` FROM audit_chunks WHERE node = ? AND last_seq <= ? ORDER BY last_seq`, node, cut.Int64)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	var n int64
	var last chunk
	var page []latchkey.AuditEvent
	flush := func() error {
		if archive != nil && len(page) > 0 {
			if err := archive(page); err != nil {
				return fmt.Errorf("sqlite: prune audit: archive: %w", err)
			}
		}
		page = page[:0]
		return nil
	}
	for rows.Next() {
		if err := scanChunk(rows, &last); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sqlite: prune audit: %w", err)
		}
		n += last.n
		if archive == nil {
			continue
		}
		evs, encs, err := last.decode()
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("sqlite: prune audit: records %d-%d: %w", last.last-last.n+1, last.last, err)
		}
		last.hashes(evs, encs, len(evs)-1)
		page = append(page, evs...)
		if len(page) >= latchkey.MaxPageLimit {
			if err := flush(); err != nil {
				rows.Close()
				return 0, err
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_anchors (node, seq, hash, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at`,
		node, last.last, auditrow.Hex(last.hash), micros(time.Now())); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_chunks WHERE node = ? AND last_seq <= ?`, node, cut.Int64); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_tokens WHERE last_seq <= ? AND last_seq NOT IN (SELECT last_seq FROM audit_chunks WHERE last_seq <= ?)`,
		cut.Int64, cut.Int64); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	// A segment's rows go with its last chunk (a segment partly pruned
	// keeps them: its other chunks may still hold the address).
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_sources WHERE seg <= ? AND NOT EXISTS
		(SELECT 1 FROM audit_chunks WHERE last_seq >= audit_sources.seg << ? AND last_seq < (audit_sources.seg + 1) << ?)`,
		cut.Int64>>sourceSegBits, sourceSegBits, sourceSegBits); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	// A segment's rows may have gone: the writer's cache of them goes too,
	// under the lock that AppendAudit reads it with (inside its own
	// transaction, which begins only once this one has ended).
	db.sources.mu.Lock()
	defer db.sources.mu.Unlock()
	db.sources.forget()
	return n, tx.Commit()
}

// VerifyAuditChain checks every node's chain from its anchor (or its
// start), chunk by chunk: each chunk must follow the one before it (its
// prev is that chunk's hash), and its records, hashed in turn from prev,
// must end at its hash. A break names the chunk's records (Seq to
// LastSeq): the chain is stored per chunk, so an edit is found to the
// chunk, not to the record. audit.VerifyChain uses it.
func (db *DB) VerifyAuditChain(ctx context.Context) (latchkey.ChainReport, error) {
	r, start, err := latchkey.StartChainReport(ctx, db)
	if err != nil {
		return r, err
	}
	for _, node := range r.Nodes {
		prev := auditrow.ParseHash(start[latchkey.AnchorKey{Node: node}].Hash)
		broken, err := db.verifyNode(ctx, node, prev, &r.Checked)
		if err != nil {
			return r, err
		}
		if broken != nil {
			r.Broken = broken
			return r, nil
		}
	}
	r.OK = true
	return r, nil
}

func (db *DB) verifyNode(ctx context.Context, node string, prev [sha256.Size]byte, checked *int64) (*latchkey.ChainBreak, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+chunkColumns+` FROM audit_chunks WHERE node = ? ORDER BY last_seq`, node)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit chain: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c chunk
		if err := scanChunk(rows, &c); err != nil {
			return nil, fmt.Errorf("sqlite: audit chain: %w", err)
		}
		brk := func(reason string) *latchkey.ChainBreak {
			return &latchkey.ChainBreak{Node: node, Seq: c.last - c.n + 1, LastSeq: c.last, Reason: reason}
		}
		if c.prev != prev {
			return brk("the chunk does not follow the one before it: records before it were removed, inserted or reordered"), nil
		}
		evs, encs, err := c.decode()
		if err != nil {
			return brk("the chunk's records do not decode: it was changed"), nil
		}
		if c.hashes(evs, encs, len(evs)-1) != c.hash {
			return brk("a record in the chunk does not match the chunk's hash: it was changed"), nil
		}
		*checked += c.n
		prev = c.hash
	}
	return nil, rows.Err()
}

// ListAudit returns a page of audit events: newest first, or, with
// f.After set, oldest first from just after that sequence number.
func (db *DB) ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error) {
	return listAudit(ctx, db.r, f, 0, db.inKeyspace(ctx, f))
}

// inKeyspace decides whether a token's records belong to f.Keyspace's
// view: a token's keyspace is read once per listing, on a connection of
// its own (the chunks' rows are still open on the other).
func (db *DB) inKeyspace(ctx context.Context, f latchkey.AuditFilter) func(tokenID string) (bool, error) {
	if f.Keyspace == "" {
		return nil
	}
	known := map[string]bool{}
	return func(id string) (bool, error) {
		in, ok := known[id]
		if !ok {
			var ks string
			err := db.r.QueryRowContext(ctx, `SELECT keyspace FROM tokens WHERE id = ?`, id).Scan(&ks)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return false, fmt.Errorf("sqlite: list audit: %w", err)
			}
			in = err == nil && ks == f.Keyspace
			known[id] = in
		}
		return in, nil
	}
}

// AuditSources tallies the records matching f (its paging fields aside)
// by client address. The chunks come from the same indexes as
// ListAudit's; at most latchkey.MaxSourceRecords records are counted.
func (db *DB) AuditSources(ctx context.Context, f latchkey.AuditFilter) (latchkey.SourceReport, error) {
	match := recordMatch(f, 0, 0, db.inKeyspace(ctx, f))
	tally := map[string]*latchkey.SourceUsage{}
	var n int64
	err := eachChunk(ctx, db.r, f, 0, 0, false, func(c *chunk) (bool, error) {
		evs, _, err := c.decode()
		if err != nil {
			return false, fmt.Errorf("sqlite: audit records %d-%d: %w", c.last-c.n+1, c.last, err)
		}
		for i := range evs {
			ok, err := match(&evs[i])
			if err != nil {
				return false, err
			}
			if !ok {
				continue
			}
			if n++; n > latchkey.MaxSourceRecords {
				return false, errTooManySourceRecords
			}
			latchkey.Tally(tally, &evs[i])
		}
		return true, nil
	})
	if err != nil {
		return latchkey.SourceReport{}, err
	}
	return latchkey.Report(tally), nil
}

var errTooManySourceRecords = latchkey.Errorf(latchkey.EInvalid, "more than %d records match: narrow the window (since, until) or the filter", latchkey.MaxSourceRecords)

// A source segment is a run of 1<<sourceSegBits sequence numbers:
// audit_sources says which segments hold chunks (by their last record)
// with records from an address, once per address and segment. An
// address seen again in a segment costs its writer an ignored insert,
// not a new index row, so the index stays small and its pages are
// rarely written; a query by source decodes every chunk of the
// segments that hold it, and none of the others.
const sourceSegBits = 16

// chunkRange bounds the last seq of chunks: from <= last_seq < to (0:
// no bound).
type chunkRange struct{ from, to int64 }

// eachChunk calls fn with each chunk that may hold records matching f
// with lo < seq < hi (hi 0: no bound), in seq order, until fn returns
// false. The key, audit_tokens and audit_sources narrow the chunks;
// the caller's recordMatch picks the records.
func eachChunk(ctx context.Context, q queryer, f latchkey.AuditFilter, lo, hi int64, asc bool, fn func(*chunk) (bool, error)) error {
	ranges := []chunkRange{{}}
	if f.Source.IsValid() {
		var err error
		if ranges, err = sourceSegments(ctx, q, f.Source, asc); err != nil {
			return err
		}
	}
	for _, r := range ranges {
		more, err := eachChunkIn(ctx, q, f, lo, hi, r, asc, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// sourceSegments lists the chunk ranges of the segments that hold records
// from addresses in p, in seq order.
func sourceSegments(ctx context.Context, q queryer, p netip.Prefix, asc bool) ([]chunkRange, error) {
	from, to := latchkey.SourceRange(p)
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT seg FROM audit_sources WHERE ip >= ? AND ip <= ? ORDER BY seg `+map[bool]string{true: "ASC", false: "DESC"}[asc], from[:], to[:])
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit by source: %w", err)
	}
	defer rows.Close()
	var out []chunkRange
	for rows.Next() {
		var seg int64
		if err := rows.Scan(&seg); err != nil {
			return nil, fmt.Errorf("sqlite: audit by source: %w", err)
		}
		out = append(out, chunkRange{seg << sourceSegBits, (seg + 1) << sourceSegBits})
	}
	return out, rows.Err()
}

func eachChunkIn(ctx context.Context, q queryer, f latchkey.AuditFilter, lo, hi int64, r chunkRange, asc bool, fn func(*chunk) (bool, error)) (bool, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.Node != "" {
		add("node = ?", f.Node)
	}
	if lo > 0 {
		add("last_seq > ?", lo)
	}
	if hi > 0 {
		// The chunk's first record is before hi; the bound on last_seq
		// lets SQLite use the key.
		add("last_seq < ?", hi+auditrow.MaxChunk)
		add("last_seq - n + 1 < ?", hi)
	}
	if r.from > 0 {
		add("last_seq >= ?", r.from)
	}
	if r.to > 0 {
		add("last_seq < ?", r.to)
	}
	if !f.Since.IsZero() {
		add("t_max >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		add("t_min < ?", micros(f.Until))
	}
	if f.TokenID != "" {
		add("last_seq IN (SELECT last_seq FROM audit_tokens WHERE token_id = ?)", f.TokenID)
	}
	query := `SELECT ` + chunkColumns + ` FROM audit_chunks`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY last_seq " + map[bool]string{true: "ASC", false: "DESC"}[asc]
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c chunk
		if err := scanChunk(rows, &c); err != nil {
			return false, fmt.Errorf("sqlite: list audit: %w", err)
		}
		if more, err := fn(&c); err != nil || !more {
			return false, err
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return true, nil
}

// recordMatch decides which records of the chunks chunkQuery selected
// match f; inKeyspace decides f.Keyspace's token records.
func recordMatch(f latchkey.AuditFilter, lo, hi int64, inKeyspace func(string) (bool, error)) func(ev *latchkey.AuditEvent) (bool, error) {
	ksSubject := latchkey.KeyspaceSubject(f.Keyspace)
	return func(ev *latchkey.AuditEvent) (bool, error) {
		switch {
		case ev.Seq <= lo, hi > 0 && ev.Seq >= hi,
			f.TokenID != "" && ev.TokenID != f.TokenID,
			f.Subject != "" && ev.Subject != f.Subject,
			f.Outcome != "" && ev.Outcome != f.Outcome,
			f.Kind != "" && ev.Kind != f.Kind,
			f.Action != "" && ev.Action != f.Action,
			f.Source.IsValid() && !latchkey.InSource(f.Source, ev.ClientIP),
			!f.Since.IsZero() && ev.Time.Before(f.Since),
			!f.Until.IsZero() && !ev.Time.Before(f.Until):
			return false, nil
		}
		if f.Keyspace != "" && ev.Subject != ksSubject {
			if ev.TokenID == "" {
				return false, nil
			}
			return inKeyspace(ev.TokenID)
		}
		return true, nil
	}
}

// listAudit is ListAudit on q, limited to seq <= maxSeq when maxSeq > 0.
// inKeyspace decides f.Keyspace's token records.
func listAudit(ctx context.Context, q queryer, f latchkey.AuditFilter, maxSeq int64, inKeyspace func(string) (bool, error)) (latchkey.AuditPage, error) {
	limit := latchkey.PageLimit(f.Limit)
	asc := f.After > 0 || f.Ascending
	// Records in the page have lo < seq < hi (hi 0: no bound).
	lo, hi := int64(0), int64(0)
	if asc {
		lo = f.After
	} else if f.Cursor != "" {
		seq, err := latchkey.DecodeCursor(f.Cursor)
		if err != nil {
			return latchkey.AuditPage{}, err
		}
		hi = seq
	}
	if maxSeq > 0 && (hi == 0 || maxSeq+1 < hi) {
		hi = maxSeq + 1
	}
	match := recordMatch(f, lo, hi, inKeyspace)
	var page latchkey.AuditPage
	err := eachChunk(ctx, q, f, lo, hi, asc, func(c *chunk) (bool, error) {
		evs, encs, err := c.decode()
		if err != nil {
			return false, fmt.Errorf("sqlite: audit records %d-%d: %w", c.last-c.n+1, c.last, err)
		}
		var picked []int
		for i := range evs {
			j := i
			if !asc {
				j = len(evs) - 1 - i
			}
			ok, err := match(&evs[j])
			if err != nil {
				return false, err
			}
			if ok {
				picked = append(picked, j)
				if len(page.Events)+len(picked) > limit {
					break
				}
			}
		}
		if len(picked) > 0 {
			c.hashes(evs, encs, slices.Max(picked))
			for _, j := range picked {
				page.Events = append(page.Events, evs[j])
			}
		}
		return len(page.Events) <= limit, nil
	})
	if err != nil {
		return latchkey.AuditPage{}, err
	}
	if len(page.Events) > limit {
		page.Events = page.Events[:limit]
		page.Next = latchkey.EncodeCursor(page.Events[limit-1].Seq)
	}
	return page, nil
}
