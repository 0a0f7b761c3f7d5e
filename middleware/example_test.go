package middleware_test

import (
	"net/http"
	"os"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/middleware"
)

// A service protected by a latchkey server: every request to /invoices
// needs a token covering invoices:read; the handler learns who called.
func Example() {
	v := middleware.Remote(&client.Client{BaseURL: "http://127.0.0.1:7480", Token: os.Getenv("LATCHKEY_TOKEN")})
	mux := http.NewServeMux()
	mux.Handle("/invoices", middleware.Require(v, "invoices:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := middleware.FromContext(r.Context())
		w.Write([]byte("invoices for " + id.Subject))
	})))
	_ = http.ListenAndServe
}
