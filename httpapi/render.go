package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// MaxBodyBytes limits every request body.
const MaxBodyBytes = 64 << 10

// statusOf is the one place that maps error codes to HTTP statuses.
func statusOf(code string) int {
	switch code {
	case latchkey.EInvalid:
		return http.StatusBadRequest
	case latchkey.ENotFound:
		return http.StatusNotFound
	case latchkey.EConflict:
		return http.StatusConflict
	case latchkey.EUnauthenticated:
		return http.StatusUnauthorized
	case latchkey.EPermissionDenied:
		return http.StatusForbidden
	case latchkey.EUnavailable:
		return http.StatusServiceUnavailable
	case latchkey.EResourceExhausted:
		return http.StatusTooManyRequests
	case "method_not_allowed":
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

// writeError renders err. Internal errors are logged in full and shown to
// the client only as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if p := r.URL.Path; p == "/oauth2/introspect" || p == "/oauth2/revoke" {
		s.oauthError(w, r, err) // RFC 7662 and 7009 answer in RFC 6749's form
		return
	}
	code := latchkey.ErrorCode(err)
	switch {
	case code == latchkey.EInternal:
		s.logger().Error("request failed", "method", r.Method, "path", secret.Redact(r.URL.Path), "request_id", requestID(r), "err", err)
	case code == latchkey.EUnavailable && latchkey.Unreachable(err):
		s.logger().Warn("request failed: the store is unavailable", "method", r.Method, "path", secret.Redact(r.URL.Path), "request_id", requestID(r), "err", err)
	}
	var body client.ErrorBody
	// A message may quote input, and input may hold a token by mistake.
	body.Error.Code, body.Error.Message = code, secret.Redact(latchkey.ErrorMessage(err))
	if code == latchkey.EUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.FormatInt(edge.RetryAfter(rl.retryAfter), 10))
	}
	if code == latchkey.EUnavailable {
		// The store (or the server) is briefly out: a client may come back
		// in a second; nodes reconnect within maxBackoff of its return.
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, statusOf(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store") // responses may carry a plaintext token
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// decode reads one JSON object into v: at most MaxBodyBytes, no unknown
// fields, nothing after it. Messages name the problem but never echo the
// body, which may hold a token.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	// The body is read as JSON whatever its Content-Type says: "curl -d"
	// labels JSON as a form, and refusing it helps nobody. Admin calls need
	// a bearer header, which a cross-site form cannot send.
	return decodeFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes), v)
}

// decodeFrom reads exactly one JSON object from body into v, strictly:
// unknown fields, field names that differ only in case ("NAME"),
// duplicate fields, invalid UTF-8, a body that is not an object (null
// included) and anything after the object are refused. encoding/json
// accepts the first four silently, so the decoding is done by
// github.com/go-json-experiment/json, encoding/json/v2 as it will be
// in the standard library.
func decodeFrom(body io.Reader, v any) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return decodeError(err)
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	switch {
	case len(t) == 0:
		return latchkey.Errorf(latchkey.EInvalid, "request body is empty; a JSON object is required")
	case t[0] != '{':
		return latchkey.Errorf(latchkey.EInvalid, "request body must be a JSON object")
	case !utf8.Valid(b):
		return latchkey.Errorf(latchkey.EInvalid, "request body is not valid UTF-8")
	}
	if err := jsonv2.Unmarshal(b, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return decodeError(err)
	}
	return nil
}

func decodeError(err error) error {
	var (
		syn *jsontext.SyntacticError
		sem *jsonv2.SemanticError
		mbe *http.MaxBytesError
		lk  *latchkey.Error
	)
	switch {
	case errors.As(err, &mbe):
		return latchkey.Errorf(latchkey.EInvalid, "request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return latchkey.Errorf(latchkey.EInvalid, "malformed JSON: the body ends early")
	case errors.As(err, &syn):
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			return latchkey.Errorf(latchkey.EInvalid, "field %s appears twice", fieldName(syn.JSONPointer))
		case strings.Contains(syn.Error(), "after top-level value"):
			return latchkey.Errorf(latchkey.EInvalid, "request body must hold a single JSON object")
		}
		return latchkey.Errorf(latchkey.EInvalid, "malformed JSON at byte %d", syn.ByteOffset)
	case errors.As(err, &lk):
		return lk // a field's own check (a duration, a code) said what is wrong
	case errors.As(err, &sem):
		switch {
		case errors.Is(err, jsonv2.ErrUnknownName):
			return latchkey.Errorf(latchkey.EInvalid, "unknown field %s (field names are case-sensitive)", fieldName(sem.JSONPointer))
		case sem.GoType == reflect.TypeFor[time.Time]():
			return latchkey.Errorf(latchkey.EInvalid, "times must be RFC 3339, e.g. 2026-12-31T23:59:59Z")
		case sem.GoType != nil && sem.JSONPointer != "":
			return latchkey.Errorf(latchkey.EInvalid, "field %s must be of type %s", fieldName(sem.JSONPointer), sem.GoType.String())
		}
	}
	return latchkey.Errorf(latchkey.EInvalid, "invalid request body")
}

// fieldName quotes the JSON field a pointer ends at (/rate_limit/limit:
// "rate_limit.limit"), at most 64 bytes of it, escaped.
func fieldName(p jsontext.Pointer) string {
	var parts []string
	for tok := range p.Tokens() {
		parts = append(parts, tok)
	}
	name := strings.Join(parts, ".")
	if len(name) > 64 {
		name = name[:64]
	}
	return strconv.Quote(name)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
