package httpapi

import "time"

// SetStreamRecheck shortens how often streams recheck their credential;
// the returned func restores it.
func SetStreamRecheck(d time.Duration) func() {
	old := streamRecheck
	streamRecheck = d
	return func() { streamRecheck = old }
}
