// Package latchkey is the domain of the latchkey API token system: tokens,
// scopes, verification decisions, audit events, error codes, and the Store
// contract that every backend implements.
//
// The package imports only the standard library. Everything else in the
// module (secret/, verify/, audit/, sqlite/, httpapi/, cmd/) points inward to
// it; a test in this package enforces that direction.
package latchkey

import (
	"errors"
	"fmt"
)

// Error codes. One place (httpapi) maps them to HTTP statuses.
const (
	EInvalid           = "invalid_argument"   // the request is malformed or breaks a rule
	ENotFound          = "not_found"          // the named resource does not exist
	EConflict          = "conflict"           // the change contradicts the resource's state
	EUnauthenticated   = "unauthenticated"    // no credential, or one that does not verify
	EPermissionDenied  = "permission_denied"  // the credential lacks the needed grant
	EUnavailable       = "unavailable"        // shutting down, or a dependency is down
	EResourceExhausted = "resource_exhausted" // a rate limit was hit; retry later
	EInternal          = "internal"           // anything unexpected; detail goes to the log
)

// Error is the one error type of latchkey. Code is one of the E* constants;
// Message is safe to show to the caller and must never hold a secret.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("latchkey: %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the public message of the first *Error in err's
// chain, or a generic message for any other error, so that internal detail
// (SQL, file paths) never reaches a client.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrNotFound is returned (possibly wrapped) by stores when a token does not
// exist. Test for it with ErrorCode(err) == ENotFound.
var ErrNotFound = &Error{Code: ENotFound, Message: "token not found"}
