package latchkey

import (
	"encoding/json"
	"time"
)

// HeldCall is a tool call the MCP gateway holds until a person approves
// or denies it (GET /v1/mcp/holds). Its arguments are redacted.
type HeldCall struct {
	ID        string          `json:"id"`
	Node      string          `json:"node"`
	Server    string          `json:"server"`
	Tool      string          `json:"tool"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	TokenID   string          `json:"token_id"`
	Subject   string          `json:"subject,omitempty"`
	ClientIP  string          `json:"client_ip,omitempty"`
	Session   string          `json:"session"`
	Created   time.Time       `json:"created"`
	Deadline  time.Time       `json:"deadline"`
	// State is "held" until decided: "approved", "denied", "expired" or
	// "cancelled" (the agent went away, or its session ended).
	State     string    `json:"state"`
	DecidedBy string    `json:"decided_by,omitempty"` // the approver's token id
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

// ToolPin is a tool definition the MCP gateway pinned when it first saw
// it (GET /v1/mcp/tools). A call is refused while the upstream's current
// definition differs (Pending) until an administrator accepts it.
type ToolPin struct {
	Server      string          `json:"server"`
	Tool        string          `json:"tool"`
	Fingerprint string          `json:"fingerprint"` // SHA-256 of the canonical definition, hex
	Definition  json.RawMessage `json:"definition"`
	PinnedAt    time.Time       `json:"pinned_at"`
	Pending     *ToolChange     `json:"pending,omitempty"`
}

// ToolChange is a definition an upstream now gives for a pinned tool.
type ToolChange struct {
	Fingerprint string          `json:"fingerprint"`
	Definition  json.RawMessage `json:"definition"`
	Seen        time.Time       `json:"seen"`
}
