package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/latchkeyhq/latchkey"
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

// ErrorBody is the one error shape: {"error":{"code","message"}}.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError renders err. Internal errors are logged in full and shown to
// the client only as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := latchkey.ErrorCode(err)
	if code == latchkey.EInternal {
		s.logger().Error("request failed", "method", r.Method, "path", secret.Redact(r.URL.Path), "request_id", requestID(r), "err", err)
	}
	var body ErrorBody
	// A message may quote input, and input may hold a token by mistake.
	body.Error.Code, body.Error.Message = code, secret.Redact(latchkey.ErrorMessage(err))
	if code == latchkey.EUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", retryAfterSeconds(rl.retryAfter))
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

// decodeFrom reads exactly one JSON object from body into v, refusing
// unknown fields.
func decodeFrom(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return latchkey.Errorf(latchkey.EInvalid, "request body must hold a single JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return latchkey.Errorf(latchkey.EInvalid, "request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &syn):
		return latchkey.Errorf(latchkey.EInvalid, "malformed JSON at byte %d", syn.Offset)
	case errors.Is(err, io.EOF):
		return latchkey.Errorf(latchkey.EInvalid, "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return latchkey.Errorf(latchkey.EInvalid, "malformed JSON: the body ends early")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return latchkey.Errorf(latchkey.EInvalid, "request body must be a JSON object")
		}
		return latchkey.Errorf(latchkey.EInvalid, "field %q must be of type %s", typ.Field, typ.Type.String())
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return latchkey.Errorf(latchkey.EInvalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	if strings.Contains(err.Error(), "parsing time") {
		return latchkey.Errorf(latchkey.EInvalid, "times must be RFC 3339, e.g. 2026-12-31T23:59:59Z")
	}
	return latchkey.Errorf(latchkey.EInvalid, "invalid request body")
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
