package triggers_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers"
	"github.com/jobgate/jobgate/triggers/amqp"
	"github.com/jobgate/jobgate/triggers/kafka"
	"github.com/jobgate/jobgate/triggers/natsjs"
	"github.com/jobgate/jobgate/triggers/redisstream"
)

// FuzzQueueEventSchemas: whatever bytes a message carries (key, body, a
// header or field value), the event each queue adapter builds validates
// against its schema in schemas/, and its values come back byte-exact.
func FuzzQueueEventSchemas(f *testing.F) {
	f.Add([]byte("key"), []byte(`{"order":1}`), []byte("text"))
	f.Add([]byte{0xff}, []byte{0x00, 0xfe, 0xff}, []byte("\xc3"))
	f.Add([]byte(nil), []byte("✓ ok"), []byte(nil))
	compiled := map[string]*jsonschema.Schema{}
	for _, kind := range []string{"Ckafka", "Nats", "Amqp", "RedisStream"} {
		sch, err := schemas.Compile(schemas.RecordsSchema(kind))
		if err != nil {
			f.Fatal(err)
		}
		compiled[kind] = sch
	}
	f.Fuzz(func(t *testing.T, key, body, value []byte) {
		k, kEnc := triggers.Text(key)
		b, bEnc := triggers.Text(body)
		vals, vEnc := triggers.TextValues(map[string][]byte{"h": value})
		for kind, rec := range map[string]any{
			"Ckafka": kafka.Record{Topic: "t", Partition: 0, Offset: 1, MsgKey: k, MsgBody: b, MsgKeyEncoding: kEnc, MsgBodyEncoding: bEnc},
			"Nats": natsjs.Record{Subject: "s", Stream: "S", Sequence: 1, PublishTime: "2026-01-01T00:00:00Z", Headers: vals, HeadersEncoding: vEnc,
				MsgBody: b, MsgBodyEncoding: bEnc},
			"Amqp":        amqp.Record{Exchange: "", RoutingKey: "q", Queue: "q", Headers: vals, HeadersEncoding: vEnc, MsgBody: b, MsgBodyEncoding: bEnc},
			"RedisStream": redisstream.Record{Stream: "s", Group: "g", ID: "1-1", Fields: vals, FieldsEncoding: vEnc},
		} {
			raw, err := json.Marshal(map[string]any{"Records": []any{map[string]any{kind: rec}}})
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if vs, err := schemas.Validate(compiled[kind], inst); err != nil || len(vs) > 0 {
				t.Fatalf("%s event does not validate: %v %v\n%s", kind, vs, err, raw)
			}
		}
		for _, c := range []struct {
			got, enc string
			want     []byte
		}{{k, kEnc, key}, {b, bEnc, body}, {vals["h"], vEnc["h"], value}} {
			got := []byte(c.got)
			if c.enc == triggers.Base64 {
				var err error
				if got, err = base64.StdEncoding.DecodeString(c.got); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("%q came back as %q", c.want, got)
			}
		}
	})
}
