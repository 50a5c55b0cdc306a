package triggers

import (
	"encoding/base64"
	"net/url"
	"unicode/utf8"
)

// Base64 is the encoding named beside a value that is not UTF-8 text
// (e.g. "msgBodyEncoding": "base64"): JSON strings carry UTF-8 only, and
// a plain string() of binary bytes would turn them into U+FFFD.
const Base64 = "base64"

// Text returns b as a JSON-safe string: b itself when it is valid UTF-8
// (encoding ""), else its standard base64 (encoding Base64).
func Text(b []byte) (s, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), Base64
}

// TextValues applies Text to every value; encodings names the values
// that went base64 (nil when none did).
func TextValues(m map[string][]byte) (values, encodings map[string]string) {
	values = make(map[string]string, len(m))
	for k, v := range m {
		s, enc := Text(v)
		values[k] = s
		if enc != "" {
			if encodings == nil {
				encodings = map[string]string{}
			}
			encodings[k] = enc
		}
	}
	return values, encodings
}

// RedactURL drops a URL's credentials ("amqp://user:pass@host/vh" →
// "amqp://host/vh") for logs, errors and the functions API.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return s
	}
	u.User = nil
	return u.String()
}
