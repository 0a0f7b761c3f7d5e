package edge

import "net/http"

// Answers to edge refusals: a body that says what to fix, and no more (the
// audit record has the reason). The status is 400 unless said otherwise.
const (
	AnswerNonCanonical   = `{"error":"invalid_request","error_description":"the path is not canonical: no dot segments, empty segments, encoded / or \\, backslashes or ; parameters"}`
	AnswerBadHost        = `{"error":"invalid_request","error_description":"the Host header is not a host name or address"}`
	AnswerMethodOverride = `{"error":"invalid_request","error_description":"method override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) are refused: the request's own method is the one authorised"}`
	AnswerInQuery        = `{"error":"invalid_request","error_description":"credentials in the URL are refused: URLs end up in logs, browser history and Referer headers; send Authorization: Bearer <token>"}`
	AnswerIdentityHeader = `{"error":"invalid_request","error_description":"the request carries an X-Latchkey-* header: only latchkey may set those"}`
	AnswerNoRoute        = `{"error":"no_route"}`                 // 404
	AnswerHeaderTooLarge = `{"error":"request_header_too_large"}` // 431
)

// Target is a request's target as the edge accepted it.
type Target struct {
	Path string // decoded, canonical
	Host string // without port, lower case (CanonicalHost)
}

// CheckTarget applies the checks every HTTP door makes before routing:
// a canonical path (escapedPath, as URL.EscapedPath gives it), a plain
// host, no method-override header in h, no credential in any of the
// query strings. It returns the accepted target, or the reason for the
// refusal (a Reason constant) and the answer to send with status 400.
func CheckTarget(escapedPath, host string, h http.Header, queries ...string) (t Target, reason, answer string) {
	path, ok := CanonicalPath(escapedPath)
	if !ok {
		return t, ReasonNonCanonical, AnswerNonCanonical
	}
	t.Path = path
	if t.Host, ok = CanonicalHost(host); !ok {
		return t, ReasonBadHost, AnswerBadHost
	}
	if MethodOverride(h) {
		return t, ReasonMethodOverride, AnswerMethodOverride
	}
	for _, q := range queries {
		if CredentialInQuery(q) {
			return t, ReasonCredentialInQuery, AnswerInQuery
		}
	}
	return t, "", ""
}
