// Package ui is latchkey's dashboard: plain HTML, CSS and ES modules,
// embedded in the binary and served under /ui/ (docs/dashboard.md).
//
// There is no build step and no third-party script. The pages talk only
// to the server's own API: POST /ui/api/session to sign in, and the admin API
// relayed under /ui/api/v1/... with the session cookie as the credential
// (package httpapi). Every value from the API is put into the page as
// text (textContent), never as markup.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Files returns the dashboard's files (index.html at the root).
func Files() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	return sub
}

// Handler serves the files for paths under /ui/. The caller adds the
// security headers (httpapi does, for everything under /ui/).
func Handler() http.Handler {
	fsrv := http.StripPrefix("/ui/", http.FileServerFS(Files()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Revalidate each time: a new binary's files replace the old at once.
		w.Header().Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}
