package httpapi

import (
	"context"
	"net/http"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// MCP is the MCP gateway's administration: its held calls and its tool
// pins. Nil fields answer as if there were none.
type MCP struct {
	Holds interface {
		List() (held, decided []latchkey.HeldCall)
		Decide(id string, approve bool, by string) (latchkey.HeldCall, error)
	}
	Pins interface {
		List(ctx context.Context) ([]latchkey.ToolPin, error)
		Accept(ctx context.Context, server, tool, fingerprint, actor string) (latchkey.ToolPin, error)
	}
}

// listHolds serves GET /v1/mcp/holds: the calls held (every node's, on
// a shared store), and the last decided on this node.
func (s *Server) listHolds(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	out := client.HeldCallList{Held: []latchkey.HeldCall{}, Decided: []latchkey.HeldCall{}}
	if s.MCP != nil && s.MCP.Holds != nil {
		out.Held, out.Decided = s.MCP.Holds.List()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) approveHold(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	return s.decideHold(w, r, a, true)
}

func (s *Server) denyHold(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	return s.decideHold(w, r, a, false)
}

// decideHold serves POST /v1/mcp/holds/{id}/approve|deny.
func (s *Server) decideHold(w http.ResponseWriter, r *http.Request, a latchkey.Actor, approve bool) error {
	if s.MCP == nil || s.MCP.Holds == nil {
		return latchkey.Errorf(latchkey.ENotFound, "no such held call on this node")
	}
	h, err := s.MCP.Holds.Decide(r.PathValue("id"), approve, a.TokenID)
	if err != nil {
		return err // a *latchkey.Error: not found, conflict (already decided), permission denied (its own token)
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

// listPins serves GET /v1/mcp/tools: every pinned tool definition, with
// the changed definition an upstream now gives, if any.
func (s *Server) listPins(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	out := client.ToolPinList{Tools: []latchkey.ToolPin{}}
	if s.MCP != nil && s.MCP.Pins != nil {
		pins, err := s.MCP.Pins.List(r.Context())
		if err != nil {
			return err
		}
		out.Tools = pins
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// acceptPin serves POST /v1/mcp/tools/{mcp_server}/{tool}/accept
// {"fingerprint": "..."}: the changed definition with that fingerprint
// becomes the pinned one, and calls to the tool are allowed again.
func (s *Server) acceptPin(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req client.AcceptToolRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Fingerprint == "" {
		return latchkey.Errorf(latchkey.EInvalid, "fingerprint is required: the pending definition's, as GET /v1/mcp/tools shows it")
	}
	if s.MCP == nil || s.MCP.Pins == nil {
		return latchkey.Errorf(latchkey.ENotFound, "no MCP gateway is configured")
	}
	pin, err := s.MCP.Pins.Accept(r.Context(), r.PathValue("mcp_server"), r.PathValue("tool"), req.Fingerprint, a.TokenID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pin)
	return nil
}
