package schemas

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/internal/jobenv"
)

func schemaFor(t *testing.T, file string) string {
	switch {
	case strings.HasPrefix(file, "timer"):
		return TimerEvent
	case strings.HasPrefix(file, "apigw"):
		return APIGWEvent
	case strings.HasPrefix(file, "ckafka"):
		return CkafkaEvent
	case strings.HasPrefix(file, "nats"):
		return NatsEvent
	case strings.HasPrefix(file, "amqp"):
		return AmqpEvent
	case strings.HasPrefix(file, "redis-stream"):
		return RedisStreamEvent
	}
	t.Fatalf("no schema for %s", file)
	return ""
}

// The documented SCF samples and real captures validate, and survive a
// round trip through the Go types unchanged (as JSON values).
func TestSamplesValidateAndRoundTrip(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("testdata/valid/*.json")
	if len(files) < 4 {
		t.Fatalf("samples missing: %v", files)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sch, err := Compile(schemaFor(t, name))
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if vs, err := Validate(sch, inst); err != nil || len(vs) > 0 {
				t.Fatalf("invalid: %v %v", vs, err)
			}
			var typed any = &Timer{}
			switch {
			case strings.HasPrefix(name, "apigw"):
				typed = &APIGateway{}
			case !strings.HasPrefix(name, "timer"):
				return // Records events: their Go types live with the adapters
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(typed); err != nil {
				t.Fatal(err)
			}
			back, err := json.Marshal(typed)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			_ = json.Unmarshal(raw, &want)
			_ = json.Unmarshal(back, &got)
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("round trip (-sample +Go):\n%s", d)
			}
		})
	}
}

func TestInvalidSamplesAreRefused(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("testdata/invalid/*.json")
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			sch, err := Compile(schemaFor(t, name))
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if vs, err := Validate(sch, inst); err != nil || len(vs) == 0 {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
}

// What the environment holds when the event is in a file validates.
func TestEventFileStub(t *testing.T) {
	t.Parallel()
	sch, err := Compile(EventFileStub)
	if err != nil {
		t.Fatal(err)
	}
	for doc, valid := range map[string]bool{string(jobenv.FileStub(5 << 20)): true, `{"EventFile":"/tmp/e","EventBytes":1}`: false} {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		if vs, err := Validate(sch, inst); err != nil || (len(vs) == 0) != valid {
			t.Errorf("%s: violations %v (%v), want valid %v", doc, vs, err, valid)
		}
	}
}

// The attributes jobgate writes (internal/cloudevent's samples) validate
// against the "ce" schema.
func TestCloudEventAttributes(t *testing.T) {
	t.Parallel()
	sch, err := Compile(CloudEventAttributes)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../internal/cloudevent/testdata/valid/*.event.json")
	if len(files) < 4 {
		t.Fatalf("samples missing: %v", files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct{ CE json.RawMessage }
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(ev.CE))
		if err != nil {
			t.Fatal(err)
		}
		if vs, err := Validate(sch, inst); err != nil || len(vs) > 0 {
			t.Errorf("%s: %v %v", f, vs, err)
		}
	}
	bad, _ := jsonschema.UnmarshalJSON(strings.NewReader(`{"specversion":"1.0","id":"1","source":"/s"}`))
	if vs, err := Validate(sch, bad); err != nil || len(vs) == 0 {
		t.Errorf("attributes without type validated: %v", err)
	}
}
