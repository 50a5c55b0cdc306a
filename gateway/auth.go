package gateway

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// auth requires "Authorization: Bearer <token>" when tokens are set
// (JOBGATE_TOKENS).
func (g *Gateway) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(g.d.Tokens) == 0 {
			next(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok {
			for _, t := range g.d.Tokens {
				if subtle.ConstantTimeCompare([]byte(got), []byte(t)) == 1 {
					next(w, r)
					return
				}
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="jobgate"`)
		writeError(w, http.StatusUnauthorized, "AuthFailure", "missing or invalid bearer token", "")
	})
}
