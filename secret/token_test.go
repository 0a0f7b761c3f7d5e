package secret

import (
	"bytes"
	"crypto/rand"
	"errors"
	"hash/crc32"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// seeded returns a deterministic random source for reproducible tokens.
func seeded(seed uint64) *mrand.ChaCha8 {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return mrand.NewChaCha8(s)
}

func TestGenerateShape(t *testing.T) {
	for _, prefix := range []string{"", "lk", "acme_live", "a1_b2_c3"} {
		pt, parts, err := Generate(prefix, rand.Reader)
		if err != nil {
			t.Fatalf("Generate(%q): %v", prefix, err)
		}
		s := pt.Reveal()
		want := prefix
		if want == "" {
			want = DefaultPrefix
		}
		if parts.Prefix != want || !strings.HasPrefix(s, want+"_") {
			t.Errorf("Generate(%q) prefix = %q (token %q…)", prefix, parts.Prefix, s[:len(want)])
		}
		if len(s) != len(want)+1+16+1+43+6 {
			t.Errorf("Generate(%q) length = %d", prefix, len(s))
		}
		if want == DefaultPrefix && !regexp.MustCompile(Regexp).MatchString(s) {
			t.Errorf("published regex does not match a generated token")
		}
		if !regexp.MustCompile(AnyPrefixRegexp).MatchString(s) {
			t.Errorf("any-prefix regex does not match a generated token with prefix %q", want)
		}
	}
}

func TestGenerateRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"LK", "1lk", "lk_", "_lk", "lk__x", "l-k", strings.Repeat("a", 33)} {
		if _, _, err := Generate(p, rand.Reader); err == nil {
			t.Errorf("Generate(%q) succeeded, want error", p)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	src := seeded(1)
	for i := 0; i < 2000; i++ {
		pt, parts, err := Generate("lk", src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(pt.Reveal())
		if err != nil {
			t.Fatalf("Parse(Generate()) = %v", err)
		}
		if got != parts {
			t.Fatalf("Parse(Generate()) = %+v, want %+v", got, parts)
		}
	}
}

// Every single-character change to a valid token is refused: the checksum
// catches it (a CRC detects all single-symbol errors in inputs this short).
func TestOneCharChangeIsMalformed(t *testing.T) {
	src := seeded(2)
	for i := 0; i < 20; i++ {
		pt, _, _ := Generate("acme_live", src)
		s := pt.Reveal()
		for pos := 0; pos < len(s); pos++ {
			for _, c := range []byte(Alphabet + "_-") {
				if c == s[pos] {
					continue
				}
				mut := s[:pos] + string(c) + s[pos+1:]
				if _, err := Parse(mut); err == nil {
					t.Fatalf("Parse accepted %q changed at %d to %q", s, pos, c)
				}
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	pt, _, _ := Generate("lk", seeded(3))
	good := pt.Reveal()
	body := good[:len(good)-ChecksumLen]
	withSum := func(b string) string {
		var sum [ChecksumLen]byte
		encodeUint32(sum[:], crc32.Checksum([]byte(b), castagnoli))
		return b + string(sum[:])
	}
	maxSecret := withSum("lk_" + good[3:19] + "_" + strings.Repeat("z", SecretLen))
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrLength},
		{"short", good[:60], ErrLength},
		{"long prefix", strings.Repeat("a", 40) + good[2:], ErrLength},
		{"no separator", "lkx" + good[3:], ErrShape},
		{"bad prefix", withSum("LK" + body[2:]), ErrPrefix},
		{"bad checksum chars", body + "!!!!!!", ErrChecksum},
		{"checksum", body + "AAAAAA", ErrChecksum},
		{"bad id char", withSum("lk_" + "-" + body[4:]), ErrCharset},
		{"secret above 2^256", maxSecret, ErrRange},
		{"bad secret char", withSum(body[:30] + "!" + body[31:]), ErrRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Errorf("Parse(%q) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
	if _, err := Parse(good); err != nil {
		t.Errorf("Parse(good) = %v", err)
	}
}

// A known vector pins the format: any change to the alphabet, byte order,
// padding or checksum breaks it.
func TestKnownVector(t *testing.T) {
	id := "0123456789ABCDEF"
	var raw [32]byte
	raw[31] = 61 // the number 61 is "z" in the last place, zero-padded
	var enc [SecretLen]byte
	encode256(&enc, &raw)
	if got, want := string(enc[:]), strings.Repeat("0", 42)+"z"; got != want {
		t.Fatalf("encode256(61) = %q, want %q", got, want)
	}
	body := "lk_" + id + "_" + string(enc[:])
	sum := crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli))
	var s [ChecksumLen]byte
	encodeUint32(s[:], sum)
	p, err := Parse(body + string(s[:]))
	if err != nil || p.ID != id || p.Secret != raw {
		t.Fatalf("Parse(vector) = %+v, %v", p, err)
	}
	// 2^256-1 encodes to the largest 43-digit value that still fits.
	for i := range raw {
		raw[i] = 0xff
	}
	encode256(&enc, &raw)
	var back [32]byte
	if !decode256(string(enc[:]), &back) || back != raw {
		t.Fatalf("2^256-1 did not round-trip: %q", enc)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	pt, _, _ := Generate("lk", rand.Reader)
	s := pt.Reveal()
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse(s) }); n != 0 {
		t.Errorf("Parse allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse(s[:60] + "x") }); n > 1 {
		t.Errorf("Parse(malformed) allocates %v times", n)
	}
}

func TestFindAll(t *testing.T) {
	a, _, _ := Generate("lk", rand.Reader)
	b, _, _ := Generate("acme_live", rand.Reader)
	text := "x=" + a.Reveal() + "\ny: '" + b.Reveal() + "' and lk_" + strings.Repeat("A", 16) + "_" + strings.Repeat("B", 49)
	got := FindAll(text)
	if len(got) != 2 || got[0] != a.Reveal() || got[1] != b.Reveal() {
		t.Errorf("FindAll found %d tokens, want the 2 with valid checksums", len(got))
	}
}

func TestNewIDIsUniform(t *testing.T) {
	var counts [62]int
	src := seeded(4)
	for i := 0; i < 2000; i++ {
		id, err := NewID(src)
		if err != nil || len(id) != IDLen {
			t.Fatalf("NewID = %q, %v", id, err)
		}
		for _, c := range []byte(id) {
			counts[digitOf[c]]++
		}
	}
	// 32000 draws over 62 digits: ~516 each; every digit must appear plenty.
	for d, n := range counts {
		if n < 350 || n > 700 {
			t.Errorf("digit %c drawn %d times of 32000, far from uniform", Alphabet[d], n)
		}
	}
}

func TestGenerateFailsOnShortRandom(t *testing.T) {
	if _, _, err := Generate("lk", bytes.NewReader(make([]byte, 40))); err == nil {
		t.Error("Generate with an exhausted random source succeeded")
	}
}

func TestRedact(t *testing.T) {
	pt, _, _ := Generate("acme_live", rand.Reader)
	s := pt.Reveal()
	in := "path /v1/tokens/" + s + "?x and " + s[:len(s)-1] + "Z"
	out := Redact(in)
	if strings.Contains(out, s[20:60]) || strings.Count(out, "[redacted]") != 2 {
		t.Errorf("Redact(%q) = %q", in, out)
	}
	if Redact("nothing here") != "nothing here" || LooksLikeToken("lk_short") {
		t.Error("Redact changed innocent text")
	}
	// A token cut short keeps most of its secret: the guard catches it
	// (issue 12: 44 secret characters in a tag passed), down to 8.
	for _, n := range []int{1, 5, 20, 41} {
		cut := s[:len(s)-n]
		if !LooksLikeToken("tag:"+cut) || strings.Contains(Redact("x "+cut+" y"), cut[len(cut)-8:]) {
			t.Errorf("a token missing its last %d characters is not caught: %q", n, Redact(cut))
		}
	}
	// An id alone is public, and so is a short tail after it.
	id := s[len("acme_live")+1 : len("acme_live")+17]
	if LooksLikeToken("acme_live_"+id) || LooksLikeToken("acme_live_"+id+"_abc") {
		t.Error("an id with a short tail is treated as a secret")
	}
}
