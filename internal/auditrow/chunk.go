package auditrow

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"
	"unsafe"

	"github.com/latchkeyhq/latchkey"
)

// A chunk is the stored form of a run of consecutive records of one node
// (docs/architecture.md §5): one row holding their compact encoding, so
// that the store pays its per-row cost once per chunk instead of once per
// record. The records of a chunk are written in order, each against the
// one before it (Writer), and read back the same way (Reader):
//
//	varint  time, Unix microseconds, minus the previous record's
//	field   request_id, kind, action, actor, token_id, subject, outcome, reason
//	scopes  uvarint 0 (the previous record's scopes), or n+1 and n strings
//	field   client_ip, user_agent, method, path
//	varint  latency, nanoseconds
//	field   detail (JSON, may be empty)
//
// where a field is uvarint 0 when it equals the previous record's (the
// first record's "previous" is empty), else uvarint len+1 and its bytes,
// and a string is a uvarint length and its bytes. Most fields of a busy
// node repeat from record to record, so a verification record takes about
// 30 bytes: less to write, and less to hash.
//
// The chain over a chunk's records depends on the chunk's format:
//
//   - ChainV1 (records written before chunks, moved into them by the
//     migration): each record's hash is latchkey.ChainHash, as it was.
//   - ChainV2: h = SHA-256(prev ‖ "latchkey-audit-v2" ‖ node), then for
//     each record h = SHA-256(h ‖ its encoding); the record's hash is that
//     h. The encoding is hashed as stored, so no second encoding is made,
//     and as each encoding depends on the one before it, so does the hash.
//
// Either way the chunk keeps the hash before its first record (prev) and
// after its last (hash), which is what links chunks into a node's chain.
const (
	ChainV1 = 1
	ChainV2 = 2
)

// chainV2Tag starts a v2 chain segment, so that it can never be confused
// with a v1 canonical record.
const chainV2Tag = "latchkey-audit-v2"

// MaxChunk is the most records one chunk holds.
const MaxChunk = 1024

// Writer encodes the records of one chunk, in order.
type Writer struct {
	prev latchkey.AuditEvent // the fields of the record before (strings shared, not copied)
	t    int64
}

// Append appends the encoding of ev, against the record before it, to b.
func (w *Writer) Append(b []byte, ev *latchkey.AuditEvent) []byte {
	p := &w.prev
	t := latchkey.TimeOf(ev.Time).UnixMicro()
	b = binary.AppendVarint(b, t-w.t)
	b = field(b, ev.RequestID, p.RequestID)
	b = field(b, ev.Kind, p.Kind)
	b = field(b, ev.Action, p.Action)
	b = field(b, ev.Actor, p.Actor)
	b = field(b, ev.TokenID, p.TokenID)
	b = field(b, ev.Subject, p.Subject)
	b = field(b, ev.Outcome, p.Outcome)
	b = field(b, ev.Reason, p.Reason)
	if sameStrings(ev.Scopes, p.Scopes) {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(ev.Scopes))+1)
		for _, s := range ev.Scopes {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	b = field(b, ev.ClientIP, p.ClientIP)
	b = field(b, ev.UserAgent, p.UserAgent)
	b = field(b, ev.Method, p.Method)
	b = field(b, ev.Path, p.Path)
	b = binary.AppendVarint(b, int64(ev.Latency))
	b = field(b, unsafe.String(unsafe.SliceData(ev.Detail), len(ev.Detail)), unsafe.String(unsafe.SliceData(p.Detail), len(p.Detail)))
	w.t = t
	*p = *ev
	return b
}

func field(b []byte, s, prev string) []byte {
	if s == prev {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(s))+1)
	return append(b, s...)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ErrCorrupt reports a chunk that does not decode.
var ErrCorrupt = errors.New("audit chunk does not decode")

// Reader decodes the records of one chunk in order. Strings it returns are
// substrings of one copy of the chunk, so a page of records costs about
// one allocation per chunk rather than one per field.
type Reader struct {
	s      string
	off    int
	prev   latchkey.AuditEvent
	detail string // the previous record's detail
	t      int64
}

// NewReader reads the encoded records in data (copied).
func NewReader(data []byte) *Reader { return &Reader{s: string(data)} }

// Done reports whether every record has been read.
func (r *Reader) Done() bool { return r.off >= len(r.s) }

// Next decodes the next record into ev (Seq, Node and Hash are left to the
// caller) and returns its encoding, for the chain.
func (r *Reader) Next(ev *latchkey.AuditEvent) (enc []byte, err error) {
	start := r.off
	p := &r.prev
	dt, ok := r.varint()
	if !ok {
		return nil, ErrCorrupt
	}
	r.t += dt
	*ev = latchkey.AuditEvent{Time: time.UnixMicro(r.t).UTC()}
	for _, f := range [...]struct{ dst, prev *string }{{&ev.RequestID, &p.RequestID}, {&ev.Kind, &p.Kind}, {&ev.Action, &p.Action},
		{&ev.Actor, &p.Actor}, {&ev.TokenID, &p.TokenID}, {&ev.Subject, &p.Subject}, {&ev.Outcome, &p.Outcome}, {&ev.Reason, &p.Reason}} {
		if *f.dst, ok = r.field(*f.prev); !ok {
			return nil, ErrCorrupt
		}
	}
	n, ok := r.uvarint()
	switch {
	case !ok || n > uint64(len(r.s)-r.off)+1:
		return nil, ErrCorrupt
	case n == 0:
		ev.Scopes = p.Scopes
	case n > 1:
		ev.Scopes = make([]string, n-1)
		for i := range ev.Scopes {
			if ev.Scopes[i], ok = r.str(); !ok {
				return nil, ErrCorrupt
			}
		}
	}
	for _, f := range [...]struct{ dst, prev *string }{{&ev.ClientIP, &p.ClientIP}, {&ev.UserAgent, &p.UserAgent},
		{&ev.Method, &p.Method}, {&ev.Path, &p.Path}} {
		if *f.dst, ok = r.field(*f.prev); !ok {
			return nil, ErrCorrupt
		}
	}
	lat, ok := r.varint()
	if !ok {
		return nil, ErrCorrupt
	}
	ev.Latency = time.Duration(lat)
	d, ok := r.field(r.detail)
	if !ok {
		return nil, ErrCorrupt
	}
	r.detail = d
	if d != "" {
		ev.Detail = []byte(d)
	}
	*p = *ev
	return unsafe.Slice(unsafe.StringData(r.s[start:r.off]), r.off-start), nil
}

func (r *Reader) uvarint() (uint64, bool) {
	v, n := uvarintString(r.s[r.off:])
	if n <= 0 {
		return 0, false
	}
	r.off += n
	return v, true
}

func (r *Reader) varint() (int64, bool) {
	u, ok := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, ok
}

func (r *Reader) str() (string, bool) {
	n, ok := r.uvarint()
	if !ok || n > uint64(len(r.s)-r.off) {
		return "", false
	}
	s := r.s[r.off : r.off+int(n)]
	r.off += int(n)
	return s, true
}

// field reads a field: prev when it is marked the same.
func (r *Reader) field(prev string) (string, bool) {
	n, ok := r.uvarint()
	if !ok || n > uint64(len(r.s)-r.off)+1 {
		return "", false
	}
	if n == 0 {
		return prev, true
	}
	s := r.s[r.off : r.off+int(n-1)]
	r.off += int(n - 1)
	return s, true
}

// uvarintString is binary.Uvarint over a string.
func uvarintString(s string) (uint64, int) {
	var x uint64
	var sh uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1
			}
			return x | uint64(c)<<sh, i + 1
		}
		x |= uint64(c&0x7f) << sh
		sh += 7
	}
	return 0, 0
}

// Chain computes the hashes of a chunk's records, one at a time.
type Chain struct {
	version int
	sum     [sha256.Size]byte
	buf     []byte // sum ‖ the record's encoding, hashed in one call
}

// NewChain starts the chain of a chunk of node in format version,
// following prev (the hash before the chunk's first record; zero for a
// node's first record).
func NewChain(version int, prev [sha256.Size]byte, node string) *Chain {
	c := &Chain{version: version, sum: prev}
	if version == ChainV2 {
		b := append(append(append(make([]byte, 0, 256), prev[:]...), chainV2Tag...), node...)
		c.sum = sha256.Sum256(b)
		c.buf = b[:0]
	}
	return c
}

// Next returns the hash of the next record: of ev (v1, which hashes the
// node too: the caller sets ev.Node first) or of its encoding enc (v2).
func (c *Chain) Next(ev *latchkey.AuditEvent, enc []byte) [sha256.Size]byte {
	if c.version == ChainV1 {
		decodeHex(&c.sum, latchkey.ChainHash(hexOf(c.sum), ev))
		return c.sum
	}
	c.buf = append(append(c.buf[:0], c.sum[:]...), enc...)
	c.sum = sha256.Sum256(c.buf)
	return c.sum
}

const hexDigits = "0123456789abcdef"

func hexOf(b [sha256.Size]byte) string {
	var out [2 * sha256.Size]byte
	for i, c := range b {
		out[2*i], out[2*i+1] = hexDigits[c>>4], hexDigits[c&15]
	}
	return string(out[:])
}

// Hex is the hex form of a chain hash, as records carry it.
func Hex(b [sha256.Size]byte) string { return hexOf(b) }

// ParseHash reads a hex chain hash ("" is the zero hash: a chain's start).
// A malformed one reads as zero, which breaks the link, as it should.
func ParseHash(s string) [sha256.Size]byte {
	var b [sha256.Size]byte
	decodeHex(&b, s)
	return b
}

func decodeHex(dst *[sha256.Size]byte, s string) {
	*dst = [sha256.Size]byte{}
	if len(s) != 2*sha256.Size {
		return
	}
	for i := range dst {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi > 15 || lo > 15 {
			*dst = [sha256.Size]byte{}
			return
		}
		dst[i] = hi<<4 | lo
	}
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return 255
}
