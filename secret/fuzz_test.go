package secret

import (
	"crypto/rand"
	"testing"
)

// FuzzParse checks that Parse never panics, that whatever it accepts is
// canonical (re-encoding the parts gives back the input), and that every
// one-character change to an accepted token is refused. Seeds live in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("")
	f.Add("lk_")
	for i := uint64(0); i < 4; i++ {
		pt, _, _ := Generate([]string{"lk", "acme_live", "x", "a1_b2"}[i], seeded(100+i))
		f.Add(pt.Reveal())
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		var enc [SecretLen]byte
		encode256(&enc, &p.Secret)
		if got := p.Prefix + "_" + p.ID + "_" + string(enc[:]) + s[len(s)-ChecksumLen:]; got != s {
			t.Fatalf("Parse(%q) accepted a non-canonical token; parts re-encode to %q", s, got)
		}
		for pos := 0; pos < len(s); pos++ {
			b := []byte(s)
			b[pos] ^= 0x01
			if _, err := Parse(string(b)); err == nil {
				t.Fatalf("Parse accepted %q with byte %d flipped", s, pos)
			}
		}
	})
}

// The regexp-free pre-check never hides a token from the guard: with it
// and without it, LooksLikeToken answers the same.
func FuzzLooksLikeToken(f *testing.F) {
	tok, _, _ := Generate(DefaultPrefix, rand.Reader)
	for _, s := range []string{"", "SELECT abalance FROM pgbench_accounts WHERE aid = 1;", tok.Reveal(), "x" + tok.Reveal()[:30],
		"acme_live_0123456789abcdef_01234567", "_0123456789abcdef_01234567", "A_0123456789abcdef_01234567", "a__0123456789abcdef_0123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) >= guardMin && guardRe.MatchString(s)
		if got := LooksLikeToken(s); got != want {
			t.Fatalf("LooksLikeToken(%q) = %v, the regexp alone says %v", s, got, want)
		}
	})
}
