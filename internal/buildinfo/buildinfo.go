// Package buildinfo says which build of latchkey is running: the module
// version, the VCS revision and time the Go toolchain stamped into the
// binary, the build time (given at link time), and the Go version.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set at link time by release builds, e.g.
//
//	go build -ldflags "-X github.com/latchkeyhq/latchkey/internal/buildinfo.version=v1.2.0 \
//	  -X github.com/latchkeyhq/latchkey/internal/buildinfo.buildTime=$(date -u +%FT%TZ)" ./cmd/latchkey
var (
	version   string
	buildTime string
)

// Info is one binary's build information.
type Info struct {
	Version    string `json:"version"`               // v1.2.0; "(devel)" for a build of a checkout
	Revision   string `json:"revision,omitempty"`    // the commit built; empty when the build had no VCS (go run, a tarball)
	Modified   bool   `json:"modified,omitempty"`    // the checkout had uncommitted changes
	CommitTime string `json:"commit_time,omitempty"` // the commit's time (RFC 3339)
	BuildTime  string `json:"build_time,omitempty"`  // when it was linked, when the build said so
	GoVersion  string `json:"go_version"`
	Platform   string `json:"platform"` // GOOS/GOARCH
}

// Get reads the running binary's build information.
var Get = sync.OnceValue(func() Info {
	in := Info{Version: "(devel)", BuildTime: buildTime, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.time":
				in.CommitTime = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		in.Version = version
	}
	return in
})

// Short is the revision's first 12 characters, with "+dirty" for a
// modified checkout; "unknown" without VCS information.
func (in Info) Short() string {
	r := in.Revision
	if r == "" {
		return "unknown"
	}
	if len(r) > 12 {
		r = r[:12]
	}
	if in.Modified {
		r += "+dirty"
	}
	return r
}
