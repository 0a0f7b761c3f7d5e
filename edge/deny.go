package edge

import (
	"net/http"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Class is what a door may tell a refused client: the class of the
// refusal, never its reason. Every door maps it to its protocol (HTTP
// status and challenge, PostgreSQL SQLSTATE, JSON-RPC error).
type Class uint8

// Refusal classes.
const (
	InvalidToken Class = iota // the token is not usable (unknown, revoked, expired...): authenticate again
	Insufficient              // a real token, not allowed here (scope, network, method, path, blocked source)
	Limited                   // over the token's rate limit: retry later
	Unavailable               // no decision could be made (the store is down)
)

// Classify is the class of a refused decision, or of one that could not
// be made (err set).
func Classify(d latchkey.Decision, err error) Class {
	switch {
	case err != nil:
		return Unavailable
	case d.Code == latchkey.InsufficientScope, d.Code == latchkey.IPNotAllowed, d.Code == latchkey.Forbidden, d.Code == latchkey.Blocked:
		return Insufficient
	case d.Code == latchkey.RateLimited:
		return Limited
	default:
		return InvalidToken
	}
}

// Deny answers a refused decision, or one that could not be made (err
// set: the store is down): 401, 403 or 429 with the RFC 6750 challenge
// and, when rate limited, Retry-After; nothing more in the body, so a
// client learns no more than the code class.
func Deny(w http.ResponseWriter, d latchkey.Decision, err error) {
	h := w.Header()
	switch Classify(d, err) {
	case Unavailable:
		h.Set("Retry-After", "1")
		Refuse(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)
	case Insufficient:
		h.Set("WWW-Authenticate", `Bearer realm="latchkey", error="insufficient_scope"`)
		Refuse(w, http.StatusForbidden, `{"error":"insufficient_scope"}`)
	case Limited:
		h.Set("Retry-After", strconv.FormatInt(RetryAfter(d.Rate.RetryAfter), 10))
		Refuse(w, http.StatusTooManyRequests, `{"error":"rate_limited"}`)
	default:
		h.Set("WWW-Authenticate", `Bearer realm="latchkey", error="invalid_token"`)
		Refuse(w, http.StatusUnauthorized, `{"error":"invalid_token"}`)
	}
}

// Challenge answers a request that presented no credential: 401 with the
// bare RFC 6750 challenge.
func Challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
	Refuse(w, http.StatusUnauthorized, `{"error":"invalid_request"}`)
}

// Refuse answers with status and a small JSON body, never cached.
func Refuse(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// RetryAfter is a wait in whole seconds, rounded up and at least 1, as
// Retry-After and the API's retry_after carry it.
func RetryAfter(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}
