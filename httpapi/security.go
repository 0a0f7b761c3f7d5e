package httpapi

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

func (s *Server) listBlocks(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	if s.Blocks == nil {
		writeJSON(w, http.StatusOK, client.BlockList{Blocks: []latchkey.Block{}})
		return nil
	}
	bs, err := s.Blocks.List(r.Context())
	if err != nil {
		return err
	}
	if bs == nil {
		bs = []latchkey.Block{}
	}
	writeJSON(w, http.StatusOK, client.BlockList{Blocks: bs})
	return nil
}

func (s *Server) removeBlock(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	if s.Blocks == nil {
		return latchkey.Errorf(latchkey.ENotFound, "no blocks: the detector is off")
	}
	if err := s.Blocks.Remove(r.Context(), a, r.PathValue("source")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Headers of GitHub's secret-scanning partner scheme.
const (
	headerKeyID     = "Github-Public-Key-Identifier"
	headerSignature = "Github-Public-Key-Signature"
)

// reportLeaks serves POST /v1/leaks: a secret scanner's report of leaked
// tokens. It is accepted when signed by a configured scanner key (ECDSA
// P-256 over the raw body, as GitHub signs), or from a caller holding
// latchkey:tokens:write. Each real token is revoked before the answer.
func (s *Server) reportLeaks(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return latchkey.Errorf(latchkey.EInvalid, "the report is larger than %d bytes", MaxBodyBytes)
		}
		return latchkey.Errorf(latchkey.EInvalid, "reading the report: %v", err)
	}
	if sig := r.Header.Get(headerSignature); sig != "" {
		if err := s.checkLeakSignature(r.Header.Get(headerKeyID), sig, body); err != nil {
			return err
		}
		a.System = "leak-report"
	} else {
		src := s.clientAddr(r).Source
		d, err := s.authenticate(r, latchkey.ScopeTokensWrite, &a, src)
		if err != nil {
			return err
		}
		a.TokenID, a.Scopes = d.TokenID, d.Scopes
	}
	var reports []client.LeakReport
	if err := json.Unmarshal(body, &reports); err != nil {
		return latchkey.Errorf(latchkey.EInvalid, `the report must be a JSON array of {"token","type","url","source"}`)
	}
	res, err := s.Tokens.ReportLeaks(r.Context(), a, reports)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// checkLeakSignature verifies a report's signature with the named key.
func (s *Server) checkLeakSignature(keyID, sig string, body []byte) error {
	refuse := latchkey.Errorf(latchkey.EUnauthenticated, "the report's signature does not verify")
	pub := s.LeakKeys[keyID]
	if pub == nil {
		return latchkey.Errorf(latchkey.EUnauthenticated, "unknown signing key %.80q", keyID)
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return refuse
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, sum[:], raw) {
		return refuse
	}
	return nil
}
