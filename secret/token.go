// Package secret implements the latchkey token format of docs/architecture.md §1:
//
//	<prefix>_<id>_<secret><checksum>
//
// with a 16-character random id, a 43-character secret (32 bytes from a
// cryptographic source), and a 6-character CRC-32C checksum, all base62 and
// fixed width. It also provides the keyed hash stored in place of the
// secret, the server key file, and Plaintext, a type that will not print.
//
// The package imports only the standard library.
package secret

import (
	"fmt"
	"hash/crc32"
	"io"
	"regexp"
	"strings"
	"unsafe"
)

// Field widths of the token format.
const (
	IDLen       = 16
	SecretLen   = 43
	ChecksumLen = 6
	// MaxPrefixLen bounds the prefix so a token stays a reasonable header.
	MaxPrefixLen = 32
	// DefaultPrefix is used when none is given.
	DefaultPrefix = "lk"

	// fixedLen is everything after the prefix: "_" id "_" secret checksum.
	fixedLen = 1 + IDLen + 1 + SecretLen + ChecksumLen
)

// Regexp matches a token with the default prefix, for secret scanners.
const Regexp = `\blk_[0-9A-Za-z]{16}_[0-9A-Za-z]{49}\b`

// AnyPrefixRegexp matches a token with any valid prefix.
const AnyPrefixRegexp = `\b[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*_[0-9A-Za-z]{16}_[0-9A-Za-z]{49}\b`

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ParseError says why a string is not a well-formed token. Its text is the
// internal reason recorded in the audit log.
type ParseError string

func (e ParseError) Error() string { return string(e) }

// Reasons Parse refuses a token.
const (
	ErrLength   ParseError = "bad_length"
	ErrPrefix   ParseError = "bad_prefix"
	ErrShape    ParseError = "bad_separator"
	ErrCharset  ParseError = "bad_character"
	ErrChecksum ParseError = "bad_checksum"
	ErrRange    ParseError = "secret_out_of_range"
)

// Parts is a parsed token. Prefix and ID are substrings of the parsed
// string (no copy); Secret holds the decoded 32 secret bytes.
type Parts struct {
	Prefix string
	ID     string
	Secret [32]byte
}

// Parse checks shape, characters and checksum, and decodes the secret. It
// reads from the right, since the prefix may contain '_'. It does not
// allocate, and it never looks anything up.
func Parse(s string) (Parts, error) {
	var p Parts
	n := len(s)
	if n < fixedLen+1 || n > fixedLen+MaxPrefixLen {
		return p, ErrLength
	}
	if s[n-fixedLen] != '_' || s[n-SecretLen-ChecksumLen-1] != '_' {
		return p, ErrShape
	}
	prefix := s[:n-fixedLen]
	if !ValidPrefix(prefix) {
		return p, ErrPrefix
	}
	want, ok := decodeUint32(s[n-ChecksumLen:])
	if !ok {
		return p, ErrChecksum
	}
	body := s[:n-ChecksumLen]
	// The CRC only reads body; viewing the string's bytes avoids a copy.
	if crc32.Checksum(unsafe.Slice(unsafe.StringData(body), len(body)), castagnoli) != want {
		return p, ErrChecksum
	}
	id := s[n-fixedLen+1 : n-SecretLen-ChecksumLen-1]
	if !isBase62(id) {
		return p, ErrCharset
	}
	if !decode256(s[n-SecretLen-ChecksumLen:n-ChecksumLen], &p.Secret) {
		return p, ErrRange
	}
	p.Prefix, p.ID = prefix, id
	return p, nil
}

// ValidPrefix reports whether p is a valid prefix: segments of
// [a-z][a-z0-9]* joined by '_', at most MaxPrefixLen bytes.
func ValidPrefix(p string) bool {
	if p == "" || len(p) > MaxPrefixLen {
		return false
	}
	start := true
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z':
			start = false
		case c >= '0' && c <= '9' && !start:
		case c == '_' && !start:
			start = true
		default:
			return false
		}
	}
	return !start
}

// Generate returns a new token with the given prefix (DefaultPrefix when
// empty), drawing the id and secret from rand (use crypto/rand.Reader).
func Generate(prefix string, rand io.Reader) (Plaintext, Parts, error) {
	id, err := NewID(rand)
	if err != nil {
		return Plaintext{}, Parts{}, err
	}
	return GenerateWithID(prefix, id, rand)
}

// GenerateWithID is Generate with a given id (IDLen base62 characters),
// for an id that was reserved before its secret was drawn.
func GenerateWithID(prefix, id string, rand io.Reader) (Plaintext, Parts, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !ValidPrefix(prefix) {
		return Plaintext{}, Parts{}, fmt.Errorf("secret: invalid prefix %q: want lowercase segments like \"lk\" or \"acme_live\", at most %d bytes", prefix, MaxPrefixLen)
	}
	if len(id) != IDLen || !isBase62(id) {
		return Plaintext{}, Parts{}, fmt.Errorf("secret: an id must be %d base62 characters", IDLen)
	}
	var raw [32]byte
	if _, err := io.ReadFull(rand, raw[:]); err != nil {
		return Plaintext{}, Parts{}, fmt.Errorf("secret: reading random bytes: %w", err)
	}
	buf := make([]byte, 0, len(prefix)+fixedLen)
	buf = append(buf, prefix...)
	buf = append(buf, '_')
	buf = append(buf, id...)
	buf = append(buf, '_')
	var enc [SecretLen]byte
	encode256(&enc, &raw)
	buf = append(buf, enc[:]...)
	var sum [ChecksumLen]byte
	encodeUint32(sum[:], crc32.Checksum(buf, castagnoli))
	buf = append(buf, sum[:]...)
	s := string(buf)
	parts := Parts{Prefix: s[:len(prefix)], ID: s[len(prefix)+1 : len(prefix)+1+IDLen], Secret: raw}
	return NewPlaintext(s), parts, nil
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		if digitOf[s[i]] == 0xff {
			return false
		}
	}
	return true
}

// NewID returns a random base62 id of IDLen characters, for callers that
// need one without a secret.
func NewID(rand io.Reader) (string, error) {
	var id [IDLen]byte
	if err := randomBase62(id[:], rand); err != nil {
		return "", err
	}
	return string(id[:]), nil
}

// randomBase62 fills dst with uniform base62 digits by rejection sampling
// (bytes >= 248 are discarded so every digit is equally likely).
func randomBase62(dst []byte, rand io.Reader) error {
	var buf [32]byte
	for i := 0; i < len(dst); {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return fmt.Errorf("secret: reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			dst[i] = Alphabet[b%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

var anyPrefixRe = regexp.MustCompile(AnyPrefixRegexp)

// guardRe is what the secret guard refuses and redacts: a prefix, an id and
// at least 8 characters of secret. A token cut short (a truncated paste)
// still holds most of its secret, so the guard does not wait for the
// full length or a checksum. Group 1 is the prefix and id.
var guardRe = regexp.MustCompile(`\b([a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*_[0-9A-Za-z]{16})_[0-9A-Za-z]{8,}`)

// guardMin is the shortest text guardRe can match.
const guardMin = 1 + 1 + IDLen + 1 + 8

// FindAll returns every substring of s that looks like a token (any prefix)
// and passes the checksum. Useful for scanning text offline.
func FindAll(s string) []string {
	var out []string
	for _, m := range anyPrefixRe.FindAllString(s, -1) {
		if _, err := Parse(m); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// LooksLikeToken reports whether s contains something shaped like a token
// or a piece of one: any prefix, an id and at least 8 characters of
// secret (checksum not checked: a mistyped or truncated token is still a
// secret).
func LooksLikeToken(s string) bool {
	return len(s) >= guardMin && mayHoldToken(s) && guardRe.MatchString(s)
}

// mayHoldToken is a necessary condition of guardRe, checked without the
// regexp: somewhere a character of a prefix, "_", 16 alphanumerics (the
// id), "_" and 8 more. Text with no such place (nearly all SQL, paths and
// user agents) is passed over in a single scan; text with one goes to the
// regexp, which decides.
func mayHoldToken(s string) bool {
	for i := 1; i+1+IDLen+1+8 <= len(s); {
		j := strings.IndexByte(s[i:], '_')
		if j < 0 {
			return false
		}
		i += j
		if i+1+IDLen+1+8 > len(s) {
			return false
		}
		if p := s[i-1]; ('a' <= p && p <= 'z' || '0' <= p && p <= '9') && alnum(s[i+1:i+1+IDLen]) &&
			s[i+1+IDLen] == '_' && alnum(s[i+2+IDLen:i+2+IDLen+8]) {
			return true
		}
		i++
	}
	return false
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// Redact replaces everything in s that LooksLikeToken with its redacted
// form ("lk_4uW9…[redacted]"), for text that echoes input: error
// messages, logged paths, audit fields.
func Redact(s string) string {
	if !LooksLikeToken(s) {
		return s
	}
	return guardRe.ReplaceAllStringFunc(s, func(m string) string {
		head := guardRe.FindStringSubmatch(m)[1]
		i := len(head) - IDLen - 1 // the "_" before the id
		return head[:i] + "_" + head[i+1:i+5] + "…[redacted]"
	})
}
