package latchkey

import "time"

// Block is a client source the detector (or an admin) has blocked: every
// verification from it answers BLOCKED, before any lookup, until Until.
type Block struct {
	// Source is an IPv4 address or an IPv6 /64 network, in canonical
	// text form ("203.0.113.7", "2001:db8:1:2::/64").
	Source    string    `json:"source"`
	Until     time.Time `json:"until"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}
