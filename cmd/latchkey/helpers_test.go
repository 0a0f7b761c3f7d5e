package main

import (
	"testing"

	"github.com/latchkeyhq/latchkey/internal/itest"
)

// The helpers the integration tests share with security/ live in
// internal/itest; these are their local names.

// syncBuffer collects output written from several goroutines.
type syncBuffer = itest.Buffer

func requireService(t *testing.T, what string) { t.Helper(); itest.Require(t, what) }

func freeAddr(t *testing.T) string { return itest.FreeAddr(t) }

func freeAddrB(t testing.TB) string { return itest.FreeAddr(t) }

func waitListening(t *testing.T, addr string, logs func() string) {
	t.Helper()
	itest.WaitListening(t, addr, logs)
}
