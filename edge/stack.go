package edge

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
)

// A new connection's goroutine starts on a small stack, and a request
// through a door runs deep (the edge checks, the verifier, the record,
// the access log): its stack is copied on each doubling, every frame
// adjusted, several times per connection. Forward auth from nginx opens a
// connection per request (the README's snippet), so that copying was a
// tenth of a request's CPU. Growing the stack once, at the top of the
// first request while it is shallow, costs one small copy instead.

// grownStack is how much stack a door's request needs (rounded up to
// what the runtime allocates).
const grownStack = 16 << 10

type grownKey struct{}

// connGrown gives each connection a flag for preGrown.
func connGrown(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, grownKey{}, new(atomic.Bool))
}

// preGrown grows the stack of each connection's goroutine once, before
// its first request.
func preGrown(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g, _ := r.Context().Value(grownKey{}).(*atomic.Bool); g != nil && !g.Load() {
			g.Store(true)
			growStack(0)
		}
		h.ServeHTTP(w, r)
	})
}

// growStack needs a frame of grownStack bytes: calling it makes the
// runtime grow the stack to hold it, in one step.
//
//go:noinline
func growStack(i int) byte {
	var pad [grownStack - 8<<10]byte // with what is in use already, and the guard
	pad[i] = byte(i)
	return pad[i/2]
}
