package gateway

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"github.com/hibiken/asynqmon"
)

// adminCookie carries an admin token for asynqmon's pages, which a
// browser loads without an Authorization header.
const adminCookie = "jobgate_admin"

// asynqmonHandler serves asynqmon (gateway.asynqmon: true) at /asynqmon/
// to admin tokens only: the Authorization header, or the cookie that a
// first visit with ?token= sets (HttpOnly, SameSite=Strict, this path).
func (g *Gateway) asynqmonHandler() http.Handler {
	if !g.config().Gateway.Asynqmon {
		return g.serve(func(_ http.ResponseWriter, r *http.Request) (any, error) {
			return nil, notFound(codeNotFound, "asynqmon is off (gateway.asynqmon)")
		})
	}
	opt, err := g.d.RedisTarget.AsynqOpt()
	if err != nil {
		return g.serve(func(_ http.ResponseWriter, r *http.Request) (any, error) {
			return nil, fmt.Errorf("asynqmon: %w", err)
		})
	}
	mon := asynqmon.New(asynqmon.Options{RootPath: "/asynqmon", RedisConnOpt: opt})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query().Get("token"); q != "" && g.adminToken(q) {
			http.SetCookie(w, &http.Cookie{Name: adminCookie, Value: q, Path: "/asynqmon/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			http.Redirect(w, r, "/asynqmon/", http.StatusSeeOther) // the token leaves the URL
			return
		}
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if c, err := r.Cookie(adminCookie); err == nil && token == "" {
			token = c.Value
		}
		if len(g.d.Tokens) > 0 && !g.adminToken(token) {
			g.writeError(w, r, &apiError{status: http.StatusUnauthorized, code: codeAuthFailure,
				msg: "asynqmon needs an admin token (Authorization: Bearer, or open /asynqmon/?token=… once)"}, "")
			return
		}
		mon.ServeHTTP(w, r)
	})
}

// adminToken reports whether s is a configured token with the admin scope.
func (g *Gateway) adminToken(s string) bool {
	for _, t := range g.d.Tokens {
		if subtle.ConstantTimeCompare([]byte(s), []byte(t.Value)) == 1 && t.allows(ScopeAdmin) {
			return true
		}
	}
	return false
}
