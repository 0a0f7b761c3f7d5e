package secret

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// KeyFileName is the server key's file name inside the data directory.
const KeyFileName = "server.key"

// ParseKey decodes a server key given as text (the LATCHKEY_SERVER_KEY
// variable or the key file): base64 (standard or URL alphabet, padded or
// not) or hex, decoding to at least MinKeyLen bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("secret: server key is empty")
	}
	decoders := []func(string) ([]byte, error){
		hex.DecodeString,
		base64.RawURLEncoding.DecodeString,
		base64.URLEncoding.DecodeString,
		base64.RawStdEncoding.DecodeString,
		base64.StdEncoding.DecodeString,
	}
	for _, dec := range decoders {
		if k, err := dec(s); err == nil {
			if len(k) < MinKeyLen {
				return nil, fmt.Errorf("secret: server key decodes to %d bytes; at least %d are required", len(k), MinKeyLen)
			}
			return k, nil
		}
	}
	return nil, errors.New("secret: server key is neither base64 nor hex")
}

// EncodeKey renders a key as the key file stores it.
func EncodeKey(k []byte) string { return base64.RawURLEncoding.EncodeToString(k) + "\n" }

// LoadOrCreateKeyFile reads the server key from path, or, when the file
// does not exist, creates it with 32 bytes from rand and mode 0600.
// created reports which happened. A key file readable by group or others
// is refused: the key is what makes a stolen database useless.
func LoadOrCreateKeyFile(path string, rand io.Reader) (key []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, false, fmt.Errorf("secret: %w", err)
		}
		// Windows has no Unix permission bits (Go reports 0666); its ACLs
		// are the administrator's business there.
		if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("secret: key file %s has mode %v; it must not be readable by group or others (chmod 600 %s)", path, fi.Mode().Perm(), path)
		}
		k, err := ParseKey(string(b))
		if err != nil {
			return nil, false, fmt.Errorf("%w (in %s)", err, path)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("secret: reading key file: %w", err)
	}
	k := make([]byte, 32)
	if _, err := io.ReadFull(rand, k); err != nil {
		return nil, false, fmt.Errorf("secret: generating key: %w", err)
	}
	// O_EXCL: two processes racing to create the key cannot both win.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateKeyFile(path, rand)
		}
		return nil, false, fmt.Errorf("secret: creating key file: %w", err)
	}
	if _, err := f.WriteString(EncodeKey(k)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("secret: writing key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("secret: writing key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("secret: writing key file: %w", err)
	}
	return k, true, nil
}
