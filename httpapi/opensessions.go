package httpapi

import (
	"net/http"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
)

// OpenSessions lists and ends the long-lived sessions the doors admitted
// on this node (database connections). *edge.Sessions satisfies it.
type OpenSessions interface {
	List() []latchkey.OpenSession
	End(id, reason, by string) bool
}

// listSessions serves GET /v1/sessions: this node's open sessions, oldest
// first, optionally those of one token or one door.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, "token_id", "door"); err != nil {
		return err
	}
	tokenID, door := q.Get("token_id"), q.Get("door")
	out := []latchkey.OpenSession{}
	if s.OpenSessions != nil {
		for _, o := range s.OpenSessions.List() {
			if (tokenID == "" || o.TokenID == tokenID) && (door == "" || o.Door == door) {
				out = append(out, o)
			}
		}
	}
	writeJSON(w, http.StatusOK, client.OpenSessionList{Sessions: out})
	return nil
}

// endSession serves DELETE /v1/sessions/{id}: the session ends now (its
// client is told an administrator ended it) and its end is audited with
// the caller as the actor. The token itself is untouched: it may open
// another session unless it is revoked too.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id := r.PathValue("id")
	if s.OpenSessions == nil || !s.OpenSessions.End(id, edge.EndAdmin, a.TokenID) {
		return latchkey.Errorf(latchkey.ENotFound, "no such session open on this node")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
