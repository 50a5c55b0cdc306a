package cloudevent_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/jobgate/jobgate/internal/cloudevent"
)

// readSample reads a request written as it goes over the wire (a blank
// line between head and body).
func readSample(t *testing.T, path string) (http.Header, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := bytes.Cut(raw, []byte("\n\n"))
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(head, "\n\n"...))))
	if err != nil {
		t.Fatal(err)
	}
	return req.Header, bytes.TrimRight(body, "\n")
}

// The conformance set: binary and structured samples (the CloudEvents
// HTTP binding's own examples among them) give the event a job sees.
func TestSamples(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("testdata/valid/*.http")
	if len(files) < 4 {
		t.Fatalf("samples missing: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			header, body := readSample(t, f)
			ev, err := cloudevent.Parse(t.Context(), header, body)
			if err != nil || ev == nil {
				t.Fatalf("parse: %v %v", ev, err)
			}
			got, err := ev.ObjectEvent()
			if err != nil {
				t.Fatal(err)
			}
			wantRaw, err := os.ReadFile(strings.TrimSuffix(f, ".http") + ".event.json")
			if err != nil {
				t.Fatal(err)
			}
			var gotV, wantV any
			if err := json.Unmarshal(got, &gotV); err != nil {
				t.Fatalf("event %s: %v", got, err)
			}
			if err := json.Unmarshal(wantRaw, &wantV); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(wantV, gotV); d != "" {
				t.Errorf("event (-want +got):\n%s", d)
			}
			if !bytes.HasPrefix(got, []byte(`{"ce":{`)) {
				t.Errorf("the attributes are not the first member: %s", got)
			}
		})
	}
}

// Requests that are CloudEvents but not ones jobgate takes are refused
// with ErrInvalid.
func TestInvalid(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("testdata/invalid/*.http")
	if len(files) < 5 {
		t.Fatalf("samples missing: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			header, body := readSample(t, f)
			ev, err := cloudevent.Parse(t.Context(), header, body)
			if err == nil {
				if ev == nil {
					t.Fatal("not taken for a CloudEvent")
				}
				_, err = ev.ObjectEvent()
			}
			if !errors.Is(err, cloudevent.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// A plain request is not a CloudEvent.
func TestPlainRequest(t *testing.T) {
	t.Parallel()
	h := http.Header{"Content-Type": {"application/json"}}
	if ev, err := cloudevent.Parse(t.Context(), h, []byte(`{"a":1}`)); ev != nil || err != nil {
		t.Fatalf("%v %v", ev, err)
	}
}

// The data's bytes are kept as sent, after the attributes.
func TestObjectEventKeepsTheData(t *testing.T) {
	t.Parallel()
	h := http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}}
	data := `{ "z": 1,  "a": [2, 3] }`
	ev, err := cloudevent.Parse(t.Context(), h, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ev.ObjectEvent()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"ce":{"id":"1","source":"/s","specversion":"1.0","type":"t"}, "z": 1,  "a": [2, 3] }`; string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if ev.ID != "1" || ev.Source != "/s" {
		t.Fatalf("%+v", ev)
	}
}
