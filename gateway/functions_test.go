package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/gateway"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// GET /v1/functions shows what runs and how it is triggered — the next
// timer fire included — and never a secret: env values, trigger secrets,
// a broker URL's credentials.
func TestFunctionsAPI(t *testing.T) {
	t.Setenv("HOOK_SECRET", "hunter2")
	s := testenv.Shared(t)
	fn := config.Function{Name: "reports", Image: jobImage(t), Args: []string{"echo", "x"}, Env: map[string]string{"DB_PASSWORD": "hunter2"},
		CPU: 0.5, Triggers: []config.Trigger{
			{Type: "timer", Name: "nightly", Options: map[string]any{"cron": "0 0 2 * * * *"}},
			{Type: "http", Name: "hook", Options: map[string]any{"path": "/hooks/reports", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET", "scheme": "github"}}}},
			{Type: "nats", Name: "q", Options: map[string]any{"url": "nats://user:hunter2@127.0.0.1:1", "stream": "S", "subject": "s.>", "durable": "d"}},
			{Type: "timer", Name: "off", Options: map[string]any{"cron": "0 0 3 * * * *", "enabled": false}},
		}}
	cfg := s.Config(t, testenv.Redis(t), fn, config.Function{Name: "another", Image: jobImage(t)})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Role: node.RoleGateway})

	code, body := st.Do(t, "GET", "/v1/functions", nil, nil)
	if code != 200 || strings.Contains(string(body), "hunter2") {
		t.Fatalf("%d %s", code, body)
	}
	var list struct{ Functions []gateway.FunctionView }
	if err := json.Unmarshal(body, &list); err != nil || len(list.Functions) != 2 || list.Functions[0].Name != "another" {
		t.Fatalf("list %s: %v", body, err)
	}
	code, body = st.Do(t, "GET", "/v1/functions/reports", nil, nil)
	var v gateway.FunctionView
	if err := json.Unmarshal(body, &v); err != nil || code != 200 {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	if v.Image != fn.Image || v.CPU != 0.5 || len(v.EnvKeys) != 1 || v.EnvKeys[0] != "DB_PASSWORD" || len(v.Triggers) != 4 {
		t.Fatalf("%+v", v)
	}
	timer, hook, q := v.Triggers[0], v.Triggers[1], v.Triggers[2]
	next, err := time.Parse(time.RFC3339, timer.NextFire)
	if err != nil || !next.After(time.Now()) || next.After(time.Now().Add(24*time.Hour)) || next.In(time.FixedZone("UTC+8", 8*3600)).Hour() != 2 {
		t.Fatalf("timer %+v", timer)
	}
	if off := v.Triggers[3]; !off.Disabled || off.NextFire != "" {
		t.Fatalf("a disabled timer: %+v", off)
	}
	if hook.Path != "/hooks/reports" || hook.Auth != "hmac_sha256/github" || q.Source != "nats://127.0.0.1:1 S" {
		t.Fatalf("hook %+v queue %+v", hook, q)
	}
	if code, body := st.Do(t, "GET", "/v1/functions/nope", nil, nil); code != 404 || !strings.Contains(string(body), "FunctionNotFound") {
		t.Fatalf("unknown: %d %s", code, body)
	}
}

// gateway.asynqmon serves asynq's UI to admin tokens only: the header, or
// the cookie a first visit with ?token= sets; off, it is a JSON 404.
func TestAsynqmon(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t)})
	cfg.Gateway.Asynqmon = true
	st := testenv.StartStackWith(t, s, cfg, node.Options{Role: node.RoleGateway, Tokens: []string{"adm", "rd:read"}})
	if code, _ := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", []byte(`{}`), map[string]string{"Authorization": "Bearer adm"}); code != 202 {
		t.Fatalf("invoke: %d", code)
	}
	for tok, want := range map[string]int{"": 401, "rd": 401, "adm": 200} {
		hdr := map[string]string{}
		if tok != "" {
			hdr["Authorization"] = "Bearer " + tok
		}
		if code, body := st.Do(t, "GET", "/asynqmon/api/queues", nil, hdr); code != want || (want == 200 && !strings.Contains(string(body), `"jobgate"`)) {
			t.Errorf("token %q: %d %s", tok, code, body)
		}
	}
	// A browser: ?token= once sets the cookie, then pages load with it.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(st.URL + "/asynqmon/?token=adm")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != 303 || len(cookies) != 1 || !cookies[0].HttpOnly || resp.Header.Get("Location") != "/asynqmon/" {
		t.Fatalf("login: %d %v", resp.StatusCode, cookies)
	}
	req, _ := http.NewRequest("GET", st.URL+"/asynqmon/", nil)
	req.AddCookie(cookies[0])
	page, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("page with the cookie: %d %s", page.StatusCode, page.Header.Get("Content-Type"))
	}
	// Off: a JSON 404.
	off := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t)})
	if code, body := off.Do(t, "GET", "/asynqmon/", nil, nil); code != 404 || !strings.Contains(string(body), "gateway.asynqmon") {
		t.Fatalf("off: %d %s", code, body)
	}
}
