package latchkey

import (
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Orders of a token listing (TokenFilter.Sort). Each has a natural
// direction, which TokenFilter.Order may reverse: created newest first,
// expires soonest first (tokens that never expire last), last_used most
// recent first (tokens never used last).
const (
	SortCreated  = "created"
	SortExpires  = "expires"
	SortLastUsed = "last_used"
)

// Bounds of a token search (TokenFilter.Search).
const (
	MaxSearchLen   = 200
	MaxSearchWords = 8
	// MaxTermLen is the longest word a token is indexed by; longer words
	// are cut (a search word is cut the same way, so it still matches).
	MaxTermLen = 64
	// MaxTerms bounds the words one token is indexed by.
	MaxTerms = 64
)

// NoExpiry and NeverUsed are the sort keys the stores give a token
// without an expiry or a use (the same expressions index both columns).
const (
	NoExpiry  = math.MaxInt64
	NeverUsed = 0
)

// SearchTerms returns the words a token is found by (TokenFilter.Search):
// the lower-cased words of its name, subject and tags, and its id,
// sorted, without repeats. A word is a run of letters and digits. The
// stores index them (the token_terms table).
func SearchTerms(t *Token) []string {
	terms := []string{cutTerm(strings.ToLower(t.ID))}
	terms = append(terms, words(t.Name)...)
	terms = append(terms, words(t.Subject)...)
	for _, tag := range t.Tags {
		terms = append(terms, words(tag)...)
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	if len(terms) > MaxTerms {
		terms = terms[:MaxTerms]
	}
	return terms
}

// words splits s into lower-cased words of letters and digits, each cut
// to MaxTermLen bytes.
func words(s string) []string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for i, w := range f {
		f[i] = cutTerm(w)
	}
	return f
}

func cutTerm(w string) string {
	if len(w) <= MaxTermLen {
		return w
	}
	w = w[:MaxTermLen]
	for !utf8.ValidString(w) {
		w = w[:len(w)-1]
	}
	return w
}

// tokenShaped matches a whole token (with any prefix): a search must not
// carry a secret.
var tokenShaped = regexp.MustCompile(`[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*_[0-9A-Za-z]{16}_[0-9A-Za-z]{49}`)

// ParseSearch reads a search: every word of it must begin one of a
// token's terms (SearchTerms). It refuses a search holding a whole token,
// so that no secret is sent to be looked for (the id is the part between
// the prefix and the secret).
func ParseSearch(q string) ([]string, error) {
	if len(q) > MaxSearchLen {
		return nil, Errorf(EInvalid, "a search is at most %d bytes", MaxSearchLen)
	}
	if !utf8.ValidString(q) {
		return nil, Errorf(EInvalid, "a search must be UTF-8")
	}
	if tokenShaped.MatchString(q) {
		return nil, Errorf(EInvalid, "a search must not hold a token's secret: search by the token's id (the 16 characters after the prefix)")
	}
	w := words(q)
	slices.Sort(w)
	w = slices.Compact(w)
	if len(w) > MaxSearchWords {
		return nil, Errorf(EInvalid, "a search has at most %d words", MaxSearchWords)
	}
	return w, nil
}

// PrefixEnd returns a string above every string that begins with p and
// holds no U+10FFFF (which no term does): the end of p's key range.
func PrefixEnd(p string) string { return p + "\U0010FFFF" }

// Ordering returns the listing's sort and direction, or EInvalid.
func (f *TokenFilter) Ordering() (sort string, desc bool, err error) {
	sort = f.Sort
	switch sort {
	case "", SortCreated:
		sort, desc = SortCreated, true
	case SortExpires:
	case SortLastUsed:
		desc = true
	default:
		return "", false, Errorf(EInvalid, "sort must be created, expires or last_used")
	}
	switch f.Order {
	case "":
	case "asc":
		desc = false
	case "desc":
		desc = true
	default:
		return "", false, Errorf(EInvalid, "order must be asc or desc")
	}
	return sort, desc, nil
}

// SortKey is a token's key in a listing by sort, after its sequence
// number seq: what the stores order by (the created order is seq's).
func SortKey(t *Token, sort string, seq int64) int64 {
	switch sort {
	case SortExpires:
		if t.ExpiresAt.IsZero() {
			return NoExpiry
		}
		return t.ExpiresAt.UnixMicro()
	case SortLastUsed:
		if t.LastUsedAt.IsZero() {
			return NeverUsed
		}
		return t.LastUsedAt.UnixMicro()
	}
	return seq
}

// EncodeListCursor renders the place after a token in a sorted listing.
// The default listing (created, newest first) keeps EncodeCursor's form.
func EncodeListCursor(sort string, desc bool, key, seq int64) string {
	if sort == SortCreated && desc {
		return EncodeCursor(seq)
	}
	dir := "a"
	if desc {
		dir = "d"
	}
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "t1:%s:%s:%d:%d", sort, dir, key, seq))
}

// DecodeListCursor reverses EncodeListCursor for a listing by sort in
// direction desc; a cursor of another listing's order is EInvalid.
func DecodeListCursor(c, sort string, desc bool) (key, seq int64, err error) {
	if sort == SortCreated && desc {
		seq, err = DecodeCursor(c)
		return seq, seq, err
	}
	bad := Errorf(EInvalid, "invalid cursor (a cursor continues the listing, in the same sort and order, that gave it)")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, 0, bad
	}
	parts := strings.Split(string(b), ":")
	dir := "a"
	if desc {
		dir = "d"
	}
	if len(parts) != 5 || parts[0] != "t1" || parts[1] != sort || parts[2] != dir {
		return 0, 0, bad
	}
	key, err1 := strconv.ParseInt(parts[3], 10, 64)
	seq, err2 := strconv.ParseInt(parts[4], 10, 64)
	if err1 != nil || err2 != nil || seq <= 0 {
		return 0, 0, bad
	}
	return key, seq, nil
}

// ListWindow turns the relative filters of a listing (ExpiresWithin,
// UnusedFor) into the times the stores compare with, at now.
func (f *TokenFilter) ListWindow(now time.Time) error {
	if f.ExpiresWithin < 0 || f.UnusedFor < 0 {
		return Errorf(EInvalid, "expires_within and unused_for must not be negative")
	}
	f.ExpiresBefore, f.UnusedBefore = time.Time{}, time.Time{}
	if f.ExpiresWithin > 0 {
		f.ExpiresBefore, f.Now = now.Add(f.ExpiresWithin), now
	}
	if f.UnusedFor > 0 {
		f.UnusedBefore = now.Add(-f.UnusedFor)
	}
	return nil
}
