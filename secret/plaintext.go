package secret

import (
	"fmt"
	"log/slog"
)

// Plaintext holds a token's full text. It redacts itself in every
// formatting path (String, GoString, fmt verbs, JSON, text, slog), so it
// cannot reach a log or an error by accident; only Reveal returns the text.
//
// The text sits behind a pointer so that even a reflective dump of a struct
// holding a Plaintext in an unexported field shows an address, not the
// secret. The zero value is empty.
type Plaintext struct {
	p *string
}

// NewPlaintext wraps s.
func NewPlaintext(s string) Plaintext { return Plaintext{p: &s} }

// Reveal returns the token text. Call it only to hand the token to its
// owner (the create response) or to send it as a credential.
func (p Plaintext) Reveal() string {
	if p.p == nil {
		return ""
	}
	return *p.p
}

// IsZero reports whether p holds nothing.
func (p Plaintext) IsZero() bool { return p.p == nil || *p.p == "" }

// String returns a redacted form such as "lk_4uW9…[redacted]": the prefix
// and the first four characters of the public id, enough to tell tokens
// apart in a log.
func (p Plaintext) String() string {
	s := p.Reveal()
	if s == "" {
		return "[empty]"
	}
	if parts, err := Parse(s); err == nil {
		return parts.Prefix + "_" + parts.ID[:4] + "…[redacted]"
	}
	return "[redacted]"
}

// GoString redacts for %#v.
func (p Plaintext) GoString() string { return "secret.Plaintext(" + p.String() + ")" }

// Format redacts for every fmt verb.
func (p Plaintext) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(p.GoString()))
		return
	}
	_, _ = f.Write([]byte(p.String()))
}

// MarshalJSON redacts. Put Reveal() in a response explicitly when the
// plaintext must be shown.
func (p Plaintext) MarshalJSON() ([]byte, error) {
	return []byte(`"` + p.String() + `"`), nil
}

// MarshalText redacts.
func (p Plaintext) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// LogValue redacts for log/slog.
func (p Plaintext) LogValue() slog.Value { return slog.StringValue(p.String()) }
