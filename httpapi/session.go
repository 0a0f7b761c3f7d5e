package httpapi

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// The dashboard's sessions (docs/dashboard.md).
//
// An operator signs in by pasting an admin token once: POST /ui/api/session
// exchanges it for a cookie. The cookie holds the token sealed with
// AES-256-GCM under a key derived from the server key, with a session id
// and an expiry, so every node sharing the server key accepts it and the
// browser's script never sees the token (HttpOnly; never in localStorage
// or sessionStorage).
//
// Each dashboard data call (/ui/api/v1/...) opens the cookie and
// authenticates the sealed token exactly as a bearer token, so revoking,
// suspending or narrowing the admin token takes effect on its sessions at
// once. A state-changing call must also carry the session's CSRF token in
// X-CSRF-Token (an HMAC of the session id); SameSite=Strict keeps the
// cookie off cross-site requests in the first place.
//
// Signing out records the session id in the store (a setting read on each
// dashboard call), so a copied cookie stops working on every node.

const (
	// SessionCookie is the dashboard session cookie's name.
	SessionCookie = "latchkey_session"
	// CSRFHeader carries the session's CSRF token on state changes.
	CSRFHeader = "X-CSRF-Token"
	// DefaultSessionTTL is how long a session lasts unless configured.
	DefaultSessionTTL = 12 * time.Hour
	// UIPrefix is where the dashboard's relayed API lives: /ui/api/v1/...
	// answers as /v1/... does, authenticated by the session.
	UIPrefix = "/ui/api"
	// UISessionPath signs in (POST), tells who is signed in (GET) and
	// signs out (DELETE).
	UISessionPath = UIPrefix + "/session"

	sessionEndKey = "ui_session_end:"
	maxCookieLen  = 2048
)

// SessionStore records sign-outs. latchkey.Store satisfies it.
type SessionStore interface {
	GetSetting(ctx context.Context, key string) (string, bool, error)
	PutSetting(ctx context.Context, key, value string) error
}

// sessionKeys are the AEAD sealing cookies and the CSRF MAC key, derived
// from Server.SessionKey.
type sessionKeys struct {
	aead cipher.AEAD
	csrf []byte
}

// session is a cookie's sealed content.
type session struct {
	ID      string `json:"sid"`
	Token   string `json:"tok"`
	Expires int64  `json:"exp"` // unix seconds
}

func deriveKey(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

func (s *Server) sessionKeys() (*sessionKeys, error) {
	s.sessOnce.Do(func() {
		if len(s.SessionKey) < 32 {
			return
		}
		block, err := aes.NewCipher(deriveKey(s.SessionKey, "latchkey ui session seal v1"))
		if err != nil {
			return
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return
		}
		s.sess = &sessionKeys{aead: aead, csrf: deriveKey(s.SessionKey, "latchkey ui session csrf v1")}
	})
	if s.sess == nil {
		return nil, latchkey.Errorf(latchkey.ENotFound, "the dashboard is not enabled on this server")
	}
	return s.sess, nil
}

func (s *Server) sessionTTL() time.Duration {
	if s.SessionTTL > 0 {
		return s.SessionTTL
	}
	return DefaultSessionTTL
}

var sessionAD = []byte("latchkey-session-v1")

func (k *sessionKeys) seal(ss session) string {
	plain, _ := json.Marshal(ss)
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(k.aead.Seal(nonce, nonce, plain, sessionAD))
}

func (k *sessionKeys) open(v string) (session, bool) {
	var ss session
	if len(v) > maxCookieLen {
		return ss, false
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < k.aead.NonceSize()+k.aead.Overhead() {
		return ss, false
	}
	plain, err := k.aead.Open(nil, b[:k.aead.NonceSize()], b[k.aead.NonceSize():], sessionAD)
	if err != nil || json.Unmarshal(plain, &ss) != nil || ss.ID == "" || ss.Token == "" {
		return ss, false
	}
	return ss, true
}

func (k *sessionKeys) csrfToken(sid string) string {
	m := hmac.New(sha256.New, k.csrf)
	m.Write([]byte(sid))
	return hex.EncodeToString(m.Sum(nil))
}

// errNoSession is the 401 of a dashboard call without a live session.
var errNoSession = latchkey.Errorf(latchkey.EUnauthenticated, "no dashboard session: sign in at /ui/")

// currentSession opens the request's session cookie and checks that it
// has neither expired nor been signed out.
func (s *Server) currentSession(r *http.Request) (session, *sessionKeys, error) {
	k, err := s.sessionKeys()
	if err != nil {
		return session{}, nil, err
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return session{}, k, errNoSession
	}
	ss, ok := k.open(c.Value)
	if !ok || time.Now().Unix() >= ss.Expires {
		return session{}, k, errNoSession
	}
	if s.Sessions != nil {
		_, ended, err := s.Sessions.GetSetting(r.Context(), sessionEndKey+ss.ID)
		if err != nil {
			return session{}, k, latchkey.Errorf(latchkey.EUnavailable, "cannot check the session right now")
		}
		if ended {
			return session{}, k, errNoSession
		}
	}
	return ss, k, nil
}

// checkCSRF refuses a state change without the session's CSRF token, or
// sent from another origin.
func checkCSRF(r *http.Request, k *sessionKeys, ss session) error {
	if err := checkOrigin(r); err != nil {
		return err
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || !hmac.Equal([]byte(got), []byte(k.csrfToken(ss.ID))) {
		return latchkey.Errorf(latchkey.EPermissionDenied, "missing or wrong CSRF token: send the session's csrf_token in %s", CSRFHeader)
	}
	return nil
}

// sessionCredential is the credential of a dashboard call: the session
// cookie's token, once the session is live and, for a state change, the
// CSRF token matches.
func (s *Server) sessionCredential(r *http.Request) (string, error) {
	ss, k, err := s.currentSession(r)
	if err == nil && stateChanging(r.Method) {
		err = checkCSRF(r, k, ss)
	}
	return ss.Token, err
}

func stateChanging(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// sessionCookie builds the cookie; an empty value with maxAge < 0 clears it.
func (s *Server) sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: SessionCookie, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.overTLS(r)}
}

// overTLS reports whether the browser reached us over TLS: directly, or
// through a trusted proxy that says so in X-Forwarded-Proto.
func (s *Server) overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && s.TrustedProxies.Trusts(peer.Addr().Unmap()) && r.Header.Get("X-Forwarded-Proto") == "https"
}

// signIn serves POST /ui/api/session.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	k, err := s.sessionKeys()
	if err != nil {
		return err
	}
	if err := checkOrigin(r); err != nil {
		return err
	}
	var req client.SignInRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return latchkey.Errorf(latchkey.EInvalid, "token is required: paste an admin token")
	}
	// The dashboard opens on the live view: it needs audit:read (admin
	// covers it). To answer an OAuth consent, any valid token will do:
	// the person delegates from their own. The attempt is recorded,
	// success or not.
	// An approver of access requests may sign in too, and so may a
	// keyspace's auditor or approver: what each page shows is confined to
	// the token's reach.
	perm := latchkey.PermAuditRead + "|" + latchkey.PermApprove
	switch req.Purpose {
	case "":
	case "consent":
		perm = ""
	default:
		return latchkey.Errorf(latchkey.EInvalid, `purpose must be "consent" or absent`)
	}
	src := s.clientAddr(r).Source
	d, err := s.authenticateAs(r, req.Token, "", perm, "", &a, src, false)
	if err != nil {
		return err
	}
	exp := time.Now().Add(s.sessionTTL())
	if !d.ExpiresAt.IsZero() && d.ExpiresAt.Before(exp) {
		exp = d.ExpiresAt // a session never outlives its token
	}
	var sid [16]byte
	rand.Read(sid[:])
	ss := session{ID: hex.EncodeToString(sid[:]), Token: req.Token, Expires: exp.Unix()}
	http.SetCookie(w, s.sessionCookie(r, k.seal(ss), int(time.Until(exp)/time.Second)))
	writeSession(w, d, ss, k)
	return nil
}

// checkOrigin refuses a request another site's page sent (sign-in needs
// no CSRF token: there is no session yet, but it must come from our page).
func checkOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return latchkey.Errorf(latchkey.EPermissionDenied, "cross-origin request refused")
		}
	}
	return nil
}

// writeSession answers with who is signed in and the CSRF token.
func writeSession(w http.ResponseWriter, d latchkey.Decision, ss session, k *sessionKeys) {
	scopes := d.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	writeJSON(w, http.StatusOK, client.SessionInfo{TokenID: d.TokenID, Subject: d.Subject, Scopes: scopes,
		ExpiresAt: time.Unix(ss.Expires, 0).UTC(), CSRFToken: k.csrfToken(ss.ID)})
}

// sessionInfo serves GET /ui/api/session: who is signed in, and the CSRF
// token again (a reloaded page has lost it from memory).
func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	ss, k, err := s.currentSession(r)
	if err != nil {
		return err
	}
	src := s.clientAddr(r).Source
	d, err := s.authenticateToken(r, ss.Token, "", &a, src, true)
	if err != nil {
		return err
	}
	writeSession(w, d, ss, k)
	return nil
}

// signOut serves DELETE /ui/api/session: the session ends on every node and
// the cookie is cleared.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	ss, k, err := s.currentSession(r)
	if err != nil {
		if errors.Is(err, errNoSession) {
			http.SetCookie(w, s.sessionCookie(r, "", -1))
		}
		return err
	}
	if err := checkCSRF(r, k, ss); err != nil {
		return err
	}
	if s.Sessions != nil {
		if err := s.Sessions.PutSetting(r.Context(), sessionEndKey+ss.ID, strconv.FormatInt(ss.Expires, 10)); err != nil {
			return latchkey.Errorf(latchkey.EUnavailable, "cannot end the session right now; try again")
		}
	}
	http.SetCookie(w, s.sessionCookie(r, "", -1))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// SessionPruner is a store whose records of ended sessions can be
// pruned. latchkey.Store satisfies it.
type SessionPruner interface {
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
	DeleteSetting(ctx context.Context, key string) error
}

// PruneSessionEnds deletes the records of signed-out sessions that have
// expired anyway (their cookies are refused for that), and returns how
// many it deleted.
func PruneSessionEnds(ctx context.Context, st SessionPruner, now time.Time) (int, error) {
	rows, err := st.SettingsWithPrefix(ctx, sessionEndKey)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, v := range rows {
		if exp, err := strconv.ParseInt(v, 10, 64); err == nil && exp > now.Unix() {
			continue // still needed: the cookie has not expired
		}
		if err := st.DeleteSetting(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// uiHeaders are set on everything under /ui/.
func uiHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	// The dashboard uses none of these; a script that got in could not either.
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), hid=(), clipboard-read=(), display-capture=()")
}
