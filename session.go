package latchkey

import "time"

// OpenSession is a long-lived session a door admitted and still holds open
// (a database connection through the PostgreSQL gateway; MCP sessions to
// come), as GET /v1/sessions and the dashboard list it. It names the
// token, never holds it.
type OpenSession struct {
	ID       string `json:"id"`
	Door     string `json:"door"` // "db"
	Node     string `json:"node"` // the node holding the connection
	TokenID  string `json:"token_id"`
	Subject  string `json:"subject,omitempty"`
	ClientIP string `json:"client_ip,omitempty"`
	// Resource is what the session reaches, as clients name it (the
	// database); Role is what it was granted there (the upstream role).
	Resource   string    `json:"resource"`
	Role       string    `json:"role,omitempty"`
	Started    time.Time `json:"started"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"` // the token's: the session ends then
	Statements int64     `json:"statements"`
}
