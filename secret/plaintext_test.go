package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPlaintextRedacts(t *testing.T) {
	pt, parts, _ := Generate("lk", rand.Reader)
	raw := pt.Reveal()
	secretPart := raw[len(raw)-49:]
	type holder struct {
		Token Plaintext
		inner Plaintext
	}
	h := holder{Token: pt, inner: pt}

	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs = append(outs, fmt.Sprintf(f, pt), fmt.Sprintf(f, h), fmt.Sprintf(f, &h))
	}
	outs = append(outs, pt.String(), pt.GoString(), fmt.Sprint(pt), fmt.Sprintln(pt))
	j, _ := json.Marshal(h)
	outs = append(outs, string(j))
	j, _ = json.Marshal(map[string]any{"t": pt})
	outs = append(outs, string(j))
	txt, _ := pt.MarshalText()
	outs = append(outs, string(txt))
	var buf bytes.Buffer
	for _, hnd := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(hnd)
		l.Info("issued", "token", pt, "h", h)
		l.Info("issued", slog.Any("token", pt))
	}
	outs = append(outs, buf.String())
	err := fmt.Errorf("wrapped: %v / %w", pt, fmt.Errorf("%s", pt))
	outs = append(outs, err.Error())

	for _, o := range outs {
		if strings.Contains(o, secretPart) || strings.Contains(o, raw) {
			t.Fatalf("formatting leaked the secret: %s", o)
		}
	}
	if want := "lk_" + parts.ID[:4] + "…[redacted]"; pt.String() != want {
		t.Errorf("String() = %q, want %q", pt.String(), want)
	}
	if !strings.Contains(fmt.Sprintf("%v", h), "redacted") {
		t.Errorf("%%v of a struct holding a Plaintext does not show the redaction: %v", h)
	}
}

func TestPlaintextZero(t *testing.T) {
	var p Plaintext
	if !p.IsZero() || p.Reveal() != "" || p.String() != "[empty]" {
		t.Errorf("zero Plaintext: IsZero=%v Reveal=%q String=%q", p.IsZero(), p.Reveal(), p.String())
	}
	if NewPlaintext("not a token").String() != "[redacted]" {
		t.Error("a non-token plaintext must redact fully")
	}
}
