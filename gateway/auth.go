package gateway

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// auth requires "Authorization: Bearer <token>" when tokens are set
// (JOBGATE_TOKENS).
func (g *Gateway) auth(next endpoint) http.Handler {
	return g.serve(func(w http.ResponseWriter, r *http.Request) (any, error) {
		if len(g.d.Tokens) == 0 {
			return next(w, r)
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok {
			for _, t := range g.d.Tokens {
				if subtle.ConstantTimeCompare([]byte(got), []byte(t)) == 1 {
					return next(w, r)
				}
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="jobgate"`)
		return nil, &apiError{status: http.StatusUnauthorized, code: codeAuthFailure, msg: "missing or invalid bearer token"}
	})
}
