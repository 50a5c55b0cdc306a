package config

import (
	"bytes"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse: any document either is refused with an error or parses into
// a config that survives a round trip through YAML — never a panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"functions:\n  - name: a\n    image: r/a:1\n",
		"functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: timer, name: t, cron: '0 */5 * * * * *'}]\n",
		"functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: '/h/{x}', auth: {hmac_sha256: {secret_env: S, scheme: stripe}}}]\n",
		"functions:\n  - name: a\n    image: r/a:1\n    cpu: 0.5\n    user: '1000:1000'\n    readonly_rootfs: true\n",
		"gateway: {rate_limit: 5, rate_burst: 10}\nworker: {concurrency: 2}\n",
		"functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: kafka, name: k, brokers: [b:9092], topic: t, group: g}]\n",
		"{", "functions: 7", "- a", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := Parse(bytes.NewReader(doc), "fuzz.yaml")
		if err != nil {
			return
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("a parsed config does not marshal: %v", err)
		}
		if _, err := Parse(bytes.NewReader(out), "again.yaml"); err != nil {
			t.Fatalf("a parsed config does not parse again: %v\n%s", err, out)
		}
	})
}
