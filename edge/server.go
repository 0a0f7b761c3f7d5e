package edge

import (
	"log/slog"
	"net/http"
	"time"
)

// Limits are the timeouts and sizes of a listener. The zero value takes
// the defaults given.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (default
	// 30s). A door that streams (the gateway) sets it to -1 and bounds
	// each request's body itself (Route.BodyTimeout).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the answer (default 30s; -1: none, for
	// streams passed through).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default
	// 120s).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers (default 16 KiB).
	MaxHeaderBytes int
}

// NewServer is the http.Server every listener of latchkey uses (the API,
// the gateway, forward auth), so that no door is left without a timeout
// for a slow client to hold a connection open.
func NewServer(h http.Handler, l Limits, logger *slog.Logger) *http.Server {
	d := func(v, def time.Duration) time.Duration {
		switch {
		case v < 0:
			return 0
		case v == 0:
			return def
		}
		return v
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &http.Server{
		Handler:           preGrown(h),
		ConnContext:       connGrown,
		ReadHeaderTimeout: d(l.ReadHeaderTimeout, 5*time.Second),
		ReadTimeout:       d(l.ReadTimeout, 30*time.Second),
		WriteTimeout:      d(l.WriteTimeout, 30*time.Second),
		IdleTimeout:       d(l.IdleTimeout, 120*time.Second),
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
