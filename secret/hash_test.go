package secret

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestHasherMatchesHMAC(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	h, err := NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := Generate("lk", rand.Reader)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(p.ID))
	m.Write(p.Secret[:])
	want := m.Sum(nil)
	if got := h.Sum(p.ID, &p.Secret); !bytes.Equal(got, want) {
		t.Fatalf("Sum = %x, want HMAC-SHA256(key, id||secret) = %x", got, want)
	}
	if !h.Equal(p.ID, &p.Secret, want) {
		t.Error("Equal(correct hash) = false")
	}
	other := p.Secret
	other[0] ^= 1
	if h.Equal(p.ID, &other, want) {
		t.Error("Equal(changed secret) = true")
	}
	h2, _ := NewHasher(bytes.Repeat([]byte{8}, 32))
	if h2.Equal(p.ID, &p.Secret, want) {
		t.Error("a different key produced the same hash")
	}
	if n := testing.AllocsPerRun(100, func() { h.Equal(p.ID, &p.Secret, want) }); n != 0 && !raceEnabled {
		t.Errorf("Equal allocates %v times, want 0", n)
	}
}

// raceEnabled is set under -race, where sync.Pool drops items at random.
var raceEnabled bool

func TestHasherConcurrent(t *testing.T) {
	h, _ := NewHasher(make([]byte, 32))
	_, p, _ := Generate("lk", rand.Reader)
	want := h.Sum(p.ID, &p.Secret)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 1000; i++ {
				if !h.Equal(p.ID, &p.Secret, want) {
					t.Error("concurrent Equal failed")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestNewHasherShortKey(t *testing.T) {
	if _, err := NewHasher(make([]byte, 16)); err == nil {
		t.Error("NewHasher accepted a 16-byte key")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFileName)
	k1, created, err := LoadOrCreateKeyFile(path, rand.Reader)
	if err != nil || !created || len(k1) != 32 {
		t.Fatalf("first LoadOrCreateKeyFile = %d bytes, created=%v, %v", len(k1), created, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKeyFile(path, rand.Reader)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: created=%v err=%v same=%v", created, err, bytes.Equal(k1, k2))
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreateKeyFile(path, rand.Reader); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key file was accepted: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{EncodeKey(k), strings.Repeat("ab", 32), "  " + strings.Repeat("ab", 32) + "\n"} {
		got, err := ParseKey(s)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("ParseKey(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abcd", "not base64 at all!!"} {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) succeeded", s)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a, b := Fingerprint(make([]byte, 32)), Fingerprint(bytes.Repeat([]byte{1}, 32))
	if len(a) != 16 || a == b {
		t.Errorf("Fingerprint: %q vs %q", a, b)
	}
}
