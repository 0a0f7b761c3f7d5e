package secret

import (
	"crypto/rand"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	pt, _, _ := Generate("lk", rand.Reader)
	s := pt.Reveal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMalformed(b *testing.B) {
	pt, _, _ := Generate("lk", rand.Reader)
	s := pt.Reveal()
	s = s[:len(s)-6] + "AAAAAA"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkHasherEqual(b *testing.B) {
	h, _ := NewHasher(make([]byte, 32))
	_, p, _ := Generate("lk", rand.Reader)
	want := h.Sum(p.ID, &p.Secret)
	b.ReportAllocs()
	for b.Loop() {
		if !h.Equal(p.ID, &p.Secret, want) {
			b.Fatal("mismatch")
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Generate("lk", rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}
