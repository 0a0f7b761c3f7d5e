package latchkey

import (
	"context"
	"io"
	"time"
)

// Store is the persistence contract every backend implements (sqlite/,
// later postgres/). The conformance suite in storetest/ defines its exact
// behaviour; every store runs it unchanged.
//
// Errors: a missing token is an *Error with code ENotFound; anything else
// is an infrastructure failure.
type Store interface {
	// CreateToken inserts t (t.Version must be 1) and appends ev in the same
	// transaction. A duplicate id is EConflict.
	CreateToken(ctx context.Context, t *Token, ev *AuditEvent) error

	// GetToken returns the token with the given id.
	GetToken(ctx context.Context, id string) (*Token, error)

	// ListTokens returns one page of tokens matching f, newest first.
	ListTokens(ctx context.Context, f TokenFilter) (TokenPage, error)

	// UpdateToken loads the token, calls fn on a private copy, and when fn
	// returns nil stores the result with Version incremented and appends the
	// audit event fn returned (if not nil), all in one transaction. It
	// returns the stored token. fn's error is returned unchanged.
	UpdateToken(ctx context.Context, id string, fn func(t *Token) (*AuditEvent, error)) (*Token, error)

	// WriteTx runs fn in one write transaction: every change made through
	// tx, with its audit events, is committed together when fn returns nil,
	// and none is when it returns an error (which WriteTx returns
	// unchanged). fn may run more than once if the store retries a
	// serialisation failure, so it must not have other side effects.
	WriteTx(ctx context.Context, fn func(tx Tx) error) error

	// ConsumeUse spends one use from every budget named in series (token
	// ids whose rows hold max_uses and uses), all or none: if any budget is
	// spent, nothing changes and ok is false. remaining is the smallest
	// budget left afterwards. It is exact under any concurrency.
	ConsumeUse(ctx context.Context, series []string) (remaining int64, ok bool, err error)

	// TouchTokens raises last_used_at to each use's time (never lowers it).
	// It does not change versions: last use is not a change to the token.
	TouchTokens(ctx context.Context, uses []TokenUse) error

	// AppendAudit stores a batch of events in one transaction, assigning Seq
	// and linking each into its node's hash chain, in Seq order. Events read
	// back (ListAudit) carry their Hash; AppendAudit need not set it (the
	// SQLite store does not: the hex of every hash was a quarter of its
	// cost per record).
	AppendAudit(ctx context.Context, evs []AuditEvent) error

	// ListAudit returns one page of events matching f.
	ListAudit(ctx context.Context, f AuditFilter) (AuditPage, error)

	// AuditSources tallies the events matching f (its paging fields
	// aside) by client address (Tally, Report). More than
	// MaxSourceRecords matching events is EInvalid.
	AuditSources(ctx context.Context, f AuditFilter) (SourceReport, error)

	// AuditNodes lists the nodes that have records or anchors.
	AuditNodes(ctx context.Context) ([]string, error)
	// AuditAnchors lists where each pruned chain resumes.
	AuditAnchors(ctx context.Context) ([]AuditAnchor, error)
	// PruneAudit deletes, node by node, the records older than before
	// (never a record younger than it), after handing each page of them to
	// archive (if not nil), and anchors the chain at the last one deleted.
	// It returns how many records were deleted.
	PruneAudit(ctx context.Context, before time.Time, archive func([]AuditEvent) error) (int64, error)

	// PutBlock stores (or extends) a block and appends ev in the same
	// transaction.
	PutBlock(ctx context.Context, b Block, ev *AuditEvent) error
	// DeleteBlock removes the block on source, appending ev; ok is false
	// (and nothing is written) when there was none.
	DeleteBlock(ctx context.Context, source string, ev *AuditEvent) (ok bool, err error)
	// ListBlocks returns the blocks still in force at now.
	ListBlocks(ctx context.Context, now time.Time) ([]Block, error)

	// GetSetting and PutSetting keep small server facts (such as the server
	// key's fingerprint). GetSetting returns ok=false when key is unset.
	GetSetting(ctx context.Context, key string) (value string, ok bool, err error)
	// PutSettingIfAbsent stores value unless key is set; it returns the value
	// now stored, so concurrent first starts agree on one.
	PutSettingIfAbsent(ctx context.Context, key, value string) (string, error)
	// PutSetting stores value under key, replacing any (webhook cursors).
	PutSetting(ctx context.Context, key, value string) error
	// SettingsWithPrefix returns every setting whose key starts with
	// prefix, taken literally (the nodes' activity counts, ended sessions).
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
	// DeleteSetting removes key, if set.
	DeleteSetting(ctx context.Context, key string) error
	// ChangeSetting reads key (ok false when unset) and calls fn with it,
	// in one write transaction: fn returns the new value (or del to remove
	// the key) and an audit event (may be nil) committed with it. A
	// change is announced to every node (ChangeHandler.SettingChanged).
	// fn's error is returned unchanged and nothing is written. It is how
	// keyspaces, roles, identities and access requests change: concurrent
	// changes to one key serialise.
	ChangeSetting(ctx context.Context, key string, fn func(old string, ok bool) (value string, del bool, ev *AuditEvent, err error)) error

	// SetBudget sizes a shared usage budget (an identity's; key starts
	// with BudgetPrefix), keeping what was spent; max 0 removes it.
	// ConsumeUse spends it when its series names the key.
	SetBudget(ctx context.Context, key string, max int64) error
	// BudgetUses reports how much of a shared budget is spent.
	BudgetUses(ctx context.Context, key string) (int64, error)

	// Ping checks that the store is reachable (for /readyz).
	Ping(ctx context.Context) error

	io.Closer
}

// Tx is the view of a store inside WriteTx.
type Tx interface {
	// GetToken reads a token for update.
	GetToken(ctx context.Context, id string) (*Token, error)
	// SelectTokens reads, for update, every token sel picks, oldest first.
	SelectTokens(ctx context.Context, sel TokenSelector) ([]*Token, error)
	// CreateToken inserts t (Version 1) and appends ev (if not nil).
	CreateToken(ctx context.Context, t *Token, ev *AuditEvent) error
	// UpdateToken stores t's mutable fields, increments t.Version in place,
	// and appends ev (if not nil). Uses and LastUsedAt are not written:
	// ConsumeUse and TouchTokens own them.
	UpdateToken(ctx context.Context, t *Token, ev *AuditEvent) error
}

// UpdateInTx is UpdateToken for a store in terms of its WriteTx: both
// stores implement UpdateToken with it.
func UpdateInTx(ctx context.Context, writeTx func(ctx context.Context, fn func(tx Tx) error) error, id string,
	fn func(t *Token) (*AuditEvent, error)) (*Token, error) {
	var out *Token
	err := writeTx(ctx, func(tx Tx) error {
		t, err := tx.GetToken(ctx, id)
		if err != nil {
			return err
		}
		ev, err := fn(t)
		if err != nil {
			return err
		}
		t.ID = id
		if err := tx.UpdateToken(ctx, t, ev); err != nil {
			return err
		}
		out = t
		return nil
	})
	return out, err
}

// ChangeFeed reports the changes other nodes make to a store they share,
// so that each node's caches follow. *postgres.Follower implements it; a
// store one node has to itself (SQLite) needs none.
type ChangeFeed interface {
	// Follow calls h for every change made on any node until ctx ends,
	// then returns.
	Follow(ctx context.Context, h ChangeHandler)
	// FeedStats reports how the feed keeps up.
	FeedStats() FeedStats
}

// ChangeHandler applies changes made on other nodes.
type ChangeHandler interface {
	// TokenChanged: token id changed to version (0: unknown); drop it
	// from caches unless they already hold that version or a later one.
	// The same change may be reported more than once (by notification,
	// then by the poll that backs it up).
	TokenChanged(id string, version int64)
	// BlockChanged: a block on source was put or lifted; read it back.
	BlockChanged(source string)
	// SettingChanged: a setting changed through ChangeSetting (a
	// keyspace, role or identity); reload what depends on it.
	SettingChanged(key string)
}

// FeedStats are a change feed's counters.
type FeedStats struct {
	Listening  bool   // the notification connection is up
	Notified   uint64 // changes received by notification
	Polled     uint64 // changes found by polling
	Reconnects uint64 // times the notification connection was replaced
}
