package gateway

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzBrowserGuard: the Host and Origin checks never panic, a request
// whose Origin is its own Host is never taken for cross-site, and a Host
// is allowed exactly when its normal form is listed.
func FuzzBrowserGuard(f *testing.F) {
	for _, s := range [][2]string{{"127.0.0.1:9100", "http://127.0.0.1:9100"}, {"[::1]:80", "http://[::1]:80"},
		{"attacker.example:9100", "null"}, {"LOCALHOST", ""}, {"", "http://%zz"}, {"a:b:c", "file:///x"}} {
		f.Add(s[0], s[1])
	}
	allowed := allowedHosts(nil, "127.0.0.1:9100")
	f.Fuzz(func(t *testing.T, host, origin string) {
		r := &http.Request{Host: host, Header: http.Header{}, Method: http.MethodPost}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		_ = crossSite(r)
		if hostAllowed(allowed, r) != allowed[normalHost(host)] {
			t.Fatalf("hostAllowed(%q) disagrees with the list", host)
		}
		// A host a URL can carry as itself: its own origin is same-site.
		if u, err := url.Parse("http://" + host); err == nil && u.Host == host && host != "" && u.Path == "" && u.User == nil {
			r.Header.Set("Origin", "http://"+host)
			if crossSite(r) {
				t.Fatalf("own origin http://%s taken for cross-site", host)
			}
		}
	})
}
