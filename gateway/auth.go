package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Scope is what a token may do (docs/SECURITY.md).
type Scope string

const (
	ScopeInvoke Scope = "invoke" // POST /v1/functions/{name}/invoke
	ScopeRead   Scope = "read"   // GET records, logs, dead letters; /metrics with metrics_auth
	ScopeAdmin  Scope = "admin"  // all of the above, terminate, redrive, delete dead letters
)

// Token is one API bearer token and its scopes.
type Token struct {
	Value  string
	Scopes []Scope
	id     string // a hash of Value: the token's name in limits and logs
}

func (t Token) allows(s Scope) bool {
	for _, have := range t.Scopes {
		if have == s || have == ScopeAdmin {
			return true
		}
	}
	return false
}

// ParseTokens reads JOBGATE_TOKENS entries: "token" (admin) or
// "token:scope[+scope…]" (invoke, read, admin).
func ParseTokens(entries []string) ([]Token, error) {
	var out []Token
	for _, e := range entries {
		value, scopes := e, []Scope{ScopeAdmin}
		if i := strings.LastIndexByte(e, ':'); i >= 0 {
			value, scopes = e[:i], nil
			for _, s := range strings.Split(e[i+1:], "+") {
				switch sc := Scope(s); sc {
				case ScopeInvoke, ScopeRead, ScopeAdmin:
					scopes = append(scopes, sc)
				default:
					return nil, fmt.Errorf("JOBGATE_TOKENS: unknown scope %q (invoke, read, admin)", s)
				}
			}
		}
		if value == "" {
			return nil, fmt.Errorf("JOBGATE_TOKENS: an entry has an empty token")
		}
		sum := sha256.Sum256([]byte(value))
		out = append(out, Token{Value: value, Scopes: scopes, id: "token:" + hex.EncodeToString(sum[:4])})
	}
	return out, nil
}

// token returns the configured token r presents, if any.
func (g *Gateway) token(r *http.Request) (Token, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return Token{}, false
	}
	for _, t := range g.d.Tokens {
		if subtle.ConstantTimeCompare([]byte(got), []byte(t.Value)) == 1 {
			return t, true
		}
	}
	return Token{}, false
}

// client names who sends r, for rate limits and stream caps: its token,
// else its address.
func (g *Gateway) client(r *http.Request) string {
	if t, ok := g.token(r); ok {
		return t.id
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + clientNet(host)
}

// clientNet is the unit a client address is limited by: an IPv4 address,
// or an IPv6 address's /64 (one host usually holds a whole /64, so by
// /128 it would have 2^64 buckets).
func clientNet(host string) string {
	a, err := netip.ParseAddr(host)
	if err != nil || a.Unmap().Is4() {
		return host
	}
	return netip.PrefixFrom(a.WithZone(""), 64).Masked().String()
}

// auth requires "Authorization: Bearer <token>" with scope when tokens are
// set (JOBGATE_TOKENS); without tokens the API is open.
func (g *Gateway) auth(scope Scope, next endpoint) http.Handler {
	return g.serve(func(w http.ResponseWriter, r *http.Request) (any, error) {
		if len(g.d.Tokens) == 0 {
			return next(w, r)
		}
		t, ok := g.token(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="jobgate"`)
			return nil, &apiError{status: http.StatusUnauthorized, code: codeAuthFailure, msg: "missing or invalid bearer token"}
		}
		if !t.allows(scope) {
			return nil, &apiError{status: http.StatusForbidden, code: codeForbidden, msg: fmt.Sprintf("this token lacks the %s scope", scope)}
		}
		return next(w, r)
	})
}
