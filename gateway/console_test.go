package gateway_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// The web console in a real browser (Debian's chromium-headless-shell,
// installed by deploy/setup.sh, driven by chromedp): with the API's token
// it lists the functions, invokes one and shows its status turn FINISHED
// with its log lines, and redrives a dead letter. With
// JOBGATE_SCREENSHOTS=DIR it saves the pages it visits there.
func TestConsoleInABrowser(t *testing.T) {
	t.Parallel()
	browser, err := exec.LookPath("chromium-headless-shell")
	if err != nil {
		t.Fatalf("chromium-headless-shell (deploy/setup.sh installs it): %v", err)
	}
	s := testenv.Shared(t)
	zero := 0
	cfg := s.Config(t, testenv.Redis(t),
		config.Function{Name: "hello", Image: jobImage(t), Args: []string{"event", "stderr", "a line on stderr"},
			Triggers: []config.Trigger{{Type: "timer", Name: "nightly", Options: map[string]any{"cron": "0 0 2 * * * *"}}}},
		config.Function{Name: "broken", Image: jobImage(t), Args: []string{"exit", "3"}, Retry: config.Retry{Max: &zero}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Tokens: []string{"console-token"}})
	// A dead letter to redrive.
	code, body := st.Do(t, "POST", "/v1/functions/broken/invoke?wait=none", []byte(`{}`), map[string]string{"Authorization": "Bearer console-token"})
	var failed record.Record
	if err := json.Unmarshal(body, &failed); code != 202 || err != nil {
		t.Fatalf("invoke broken: %d %s", code, body)
	}
	if end := st.WaitEnd(t, failed.RequestId, time.Minute); end.Status != record.Failed {
		t.Fatalf("%+v", end)
	}

	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))...)
	defer cancel()
	browserCtx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	// The first run starts the browser on a context without a timeout
	// (chromedp's rule); the steps after it are bounded.
	if err := chromedp.Do(browserCtx, chromedp.Navigate(st.URL+"/ui/")); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	ctx, cancel := context.WithTimeout(browserCtx, 30*time.Second)
	defer cancel()
	shots := os.Getenv("JOBGATE_SCREENSHOTS")
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if shots == "" {
				return nil
			}
			png, err := chromedp.FullScreenshot(100)(ctx, tg) // quality 100: PNG
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, "console-"+name+".png"), png, 0o644)
		})
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			dctx, cancel := context.WithTimeout(browserCtx, 5*time.Second)
			defer cancel()
			page, _ := chromedp.Run(dctx, chromedp.OuterHTML(css("body")))
			t.Fatalf("%s: %v\nthe page:\n%s", what, err, page)
		}
	}
	step("log in and see the functions",
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), "console-token"),
		chromedp.Click(css("#token-form button")), // (form.submit() would skip the submit handler)
		chromedp.WaitVisible(css(`[data-invoke="hello"]`)),
		shot("functions"))
	step("invoke and watch it finish",
		chromedp.SetValue(css(`[data-event="hello"]`), `{"from":"the browser"}`),
		chromedp.Click(css(`[data-invoke="hello"]`)),
		chromedp.WaitVisible(css(`#record [data-status="FINISHED"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#log").textContent.includes("a line on stderr")`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("log lines: %v", err)
	}
	logText, err := chromedp.Run(ctx, chromedp.Text(css("#log")))
	if err != nil {
		t.Fatal(err)
	}
	recordText, err := chromedp.Run(ctx, chromedp.Text(css("#record")))
	if err != nil {
		t.Fatal(err)
	}
	step("the invocation and the list", shot("invocation"),
		chromedp.Navigate(st.URL+"/ui/#/invocations"),
		chromedp.WaitVisible(css(`table [data-status]`)),
		shot("invocations"))
	step("redrive a dead letter",
		chromedp.Navigate(st.URL+"/ui/#/deadletters"),
		chromedp.WaitVisible(css(`[data-redrive="`+failed.RequestId+`"]`)),
		shot("deadletters"),
		chromedp.Click(css(`[data-redrive="`+failed.RequestId+`"]`)),
		chromedp.WaitReady(css(`#attempt option[value="2"]`)))
	step("the cluster",
		chromedp.Navigate(st.URL+"/ui/#/cluster"),
		chromedp.WaitVisible(css("table")),
		shot("cluster"))
	if !strings.Contains(logText, `{"from":"the browser"}`) || !strings.Contains(logText, "END RequestId") || !strings.Contains(recordText, "hello") {
		t.Fatalf("log %q, record %q", logText, recordText)
	}
	testenv.EventuallyNoError(t, time.Minute, "the redriven attempt to end", func() error {
		r, err := st.Records.Get(context.Background(), failed.RequestId)
		if err == nil && (r.Attempt != 2 || !r.Status.Terminal()) {
			return context.DeadlineExceeded
		}
		return err
	})
}
