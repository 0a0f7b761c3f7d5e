// Package latchkey is the domain of the latchkey API token system: tokens,
// scopes, verification decisions, audit events, error codes, and the Store
// contract that every backend implements.
//
// The package imports only the standard library. Everything else in the
// module (secret/, verify/, audit/, sqlite/, httpapi/, cmd/) points inward to
// it; a test in this package enforces that direction.
package latchkey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
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

// ErrorCode returns the code of the first *Error in err's chain; for any
// other non-nil error, EUnavailable when it says a dependency could not be
// reached (Unreachable) and EInternal otherwise; and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if Unreachable(err) {
		return EUnavailable
	}
	return EInternal
}

// ErrorMessage returns the public message of the first *Error in err's
// chain, or a generic message for any other error, so that internal detail
// (SQL, file paths, addresses) never reaches a client.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	if Unreachable(err) {
		return UnavailableMessage
	}
	return "internal error"
}

// UnavailableMessage is what a caller is told when the store (or another
// dependency) cannot be reached: the detail goes to the server's log.
const UnavailableMessage = "the store is unavailable; try again shortly"

// Unreachable reports whether err says that a dependency (the database,
// Redis) could not be reached or did not answer, rather than that it
// refused the request: a network error or timeout, a connection refused,
// reset or closed, or a server that is shutting down, starting or out of
// connections (SQLSTATE class 08, 57P01–57P03, 53300). The store drivers'
// error types are recognised by their methods (SQLState, SafeToRetry), so
// this package needs none of them.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var st interface{ SQLState() string }
	if errors.As(err, &st) {
		c := st.SQLState()
		return strings.HasPrefix(c, "08") || c == "57P01" || c == "57P02" || c == "57P03" || c == "53300"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var retry interface{ SafeToRetry() bool }
	if errors.As(err, &retry) && retry.SafeToRetry() {
		return true // not sent: the connection failed first
	}
	for _, target := range []error{context.DeadlineExceeded, io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, syscall.ETIMEDOUT} {
		if errors.Is(err, target) {
			return true
		}
	}
	// pgx reports a pooled connection lost mid-query by its text alone.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "closed pool")
}

// ErrNotFound is returned (possibly wrapped) by stores when a token does not
// exist. Test for it with ErrorCode(err) == ENotFound.
var ErrNotFound = &Error{Code: ENotFound, Message: "token not found"}
