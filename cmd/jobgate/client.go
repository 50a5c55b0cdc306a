package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/jobgate/jobgate/gateway"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/record"
)

// apiClient talks to a gateway.
type apiClient struct {
	base, token string
	timeout     time.Duration // per request; 0 for streams
}

// call sends a request; a non-2xx answer becomes an error with the exit
// code its status means. out, when set, receives the decoded JSON.
func (a *apiClient) call(ctx context.Context, method, path string, body []byte, hdr map[string]string, out any) error {
	if a.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	resp, err := a.open(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return exitWith(exitUnreachable, "%s %s: %v", method, path, err)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: answer: %w", method, path, err)
		}
	}
	return nil
}

// open sends a request and returns the response of a 2xx answer.
func (a *apiClient) open(ctx context.Context, method, path string, body []byte, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, exitWith(exitUsage, "%v", err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, exitWith(exitUnreachable, "%s %s: %v", method, a.base+path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code, Message string }
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		msg = e.Error.Code + ": " + e.Error.Message
	}
	code := exitAPI
	switch resp.StatusCode {
	case http.StatusNotFound:
		code = exitNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		code = exitAuth
	}
	return nil, exitWith(code, "%s %s: %s: %s", method, path, resp.Status, msg)
}

// format is the output format: -o, else table on a terminal, else json.
func (c *cli) format() (string, error) {
	switch c.output {
	case "":
		if f, ok := c.stdout.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			return "table", nil
		}
		return "json", nil
	case "table", "json", "yaml", "name":
		return c.output, nil
	}
	return "", exitWith(exitUsage, "-o %q: want table, json, yaml or name", c.output)
}

// printValue writes v as json or yaml.
func printValue(w io.Writer, format string, v any) error {
	if format == "yaml" {
		// Through JSON, so field names are the API's.
		b, _ := json.Marshal(v)
		var generic any
		_ = json.Unmarshal(b, &generic)
		return yaml.NewEncoder(w).Encode(generic)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// show prints v in the chosen format; table rows come from rows, names
// from names.
func (c *cli) show(v any, header []string, rows [][]string, names []string) error {
	format, err := c.format()
	if err != nil {
		return err
	}
	switch format {
	case "table":
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	case "name":
		for _, n := range names {
			fmt.Fprintln(c.stdout, n)
		}
		return nil
	}
	return printValue(c.stdout, format, v)
}

// describeOne fetches one object and prints it: YAML for -o table (a
// description reads better so than as a one-row table), else as -o says.
func (c *cli) describeOne(ctx context.Context, path string, v any, name func() string) error {
	api, err := c.connect()
	if err != nil {
		return err
	}
	if err := api.call(ctx, "GET", path, nil, nil, v); err != nil {
		return err
	}
	format, err := c.format()
	if err != nil {
		return err
	}
	switch format {
	case "name":
		fmt.Fprintln(c.stdout, name())
		return nil
	case "table":
		format = "yaml"
	}
	return printValue(c.stdout, format, v)
}

func recordRow(r *record.Record) []string {
	code, dur := strconv.Itoa(r.StatusCode), "-"
	if r.EndTime != "" {
		dur = (time.Duration(r.DurationMs) * time.Millisecond).String()
	}
	return []string{r.RequestId, r.FunctionName, string(r.Status), code, strconv.Itoa(r.Attempt), r.EnqueueTime, dur}
}

var recordHeader = []string{"REQUEST ID", "FUNCTION", "STATUS", "CODE", "ATTEMPT", "ENQUEUED", "DURATION"}

func (c *cli) invokeCmd() *cobra.Command {
	var data, eventPath, batchPath, wait, key, at string
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "invoke FUNCTION [--data JSON | --event FILE|- | --batch FILE.ndjson|-] [--wait none|scheduled|finished]",
		Short: "Invoke a function with an event",
		Long: `Invoke a function. --wait none answers once the event is durably queued, scheduled (default)
once its container started, finished streams its log and exits with the job's exit code (as
docker run does). --batch queues one event per line of an NDJSON file through invoke-batch
(1000 events or 8 MiB per request, each request all or nothing) and prints the RequestIds in
order; with --idempotency-key K, request i uses the key K:i, so a rerun queues nothing twice.`,
		Example: `  jobgate invoke hello --data '{"name":"world"}'
  jobgate invoke hello --event event.json --wait finished
  echo '{"n":1}' | jobgate invoke hello --event - --wait none -o name
  jobgate invoke hello --batch events.ndjson --idempotency-key import-2026-11-28
  jobgate invoke hello --delay 10m --data '{"remind":true}'`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if batchPath != "" {
				if data != "" || eventPath != "" || (cmd.Flags().Changed("wait") && wait != "none") {
					return exitWith(exitUsage, "--batch queues without waiting, and takes no --data or --event")
				}
				return c.invokeBatch(cmd.Context(), a[0], batchPath, key)
			}
			event := []byte("{}")
			switch {
			case data != "" && eventPath != "":
				return exitWith(exitUsage, "--data and --event: choose one")
			case data != "":
				event = []byte(data)
			case eventPath == "-":
				b, err := io.ReadAll(c.stdin)
				if err != nil {
					return err
				}
				event = b
			case eventPath != "":
				b, err := os.ReadFile(eventPath)
				if err != nil {
					return exitWith(exitUsage, "--event: %v", err)
				}
				event = b
			}
			if wait != "none" && wait != "scheduled" && wait != "finished" {
				return exitWith(exitUsage, "--wait %q: want none, scheduled or finished", wait)
			}
			api, err := c.connect()
			if err != nil {
				return err
			}
			hdr := map[string]string{"Content-Type": "application/json"}
			if key != "" {
				hdr["Idempotency-Key"] = key
			}
			apiWait := wait
			if wait == "finished" {
				apiWait = "none"
			}
			q := url.Values{}
			switch {
			case delay != 0 && at != "":
				return exitWith(exitUsage, "--delay and --at: choose one")
			case delay < 0:
				return exitWith(exitUsage, "--delay must not be negative")
			case delay > 0:
				q.Set("delay_s", strconv.FormatFloat(delay.Seconds(), 'f', -1, 64))
			case at != "":
				q.Set("at", at)
			}
			if len(q) > 0 && wait == "scheduled" {
				apiWait = "none" // a delayed invocation is answered once queued
			}
			q.Set("wait", apiWait)
			var rec record.Record
			if err := api.call(cmd.Context(), "POST", "/v1/functions/"+url.PathEscape(a[0])+"/invoke?"+q.Encode(), event, hdr, &rec); err != nil {
				return err
			}
			if wait != "finished" {
				return c.show(&rec, recordHeader, [][]string{recordRow(&rec)}, []string{rec.RequestId})
			}
			fmt.Fprintln(c.stderr, "RequestId", rec.RequestId)
			return c.followToEnd(cmd.Context(), api, rec.RequestId, true)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&data, "data", "d", "", "the event, inline JSON")
	f.StringVar(&eventPath, "event", "", "the event from a file, or - for stdin (default {})")
	f.StringVar(&batchPath, "batch", "", "many events, one JSON object per line, from a file or - for stdin")
	f.StringVar(&wait, "wait", "scheduled", "none, scheduled or finished")
	f.StringVar(&key, "idempotency-key", "", "the same key and event run once")
	f.DurationVar(&delay, "delay", 0, "run it this much later (SCHEDULED until then), e.g. 90s, 2h")
	f.StringVar(&at, "at", "", "run it at this time (RFC 3339, e.g. 2026-11-29T08:00:00Z)")
	return cmd
}

// Limits of one invoke-batch request (the gateway's; see submit.MaxBatch).
const (
	batchEvents = 1000
	batchBytes  = 8 << 20
)

// invokeBatch queues every line of an NDJSON file through invoke-batch,
// in requests within the batch limits, and prints the RequestIds.
func (c *cli) invokeBatch(ctx context.Context, fn, path, key string) error {
	in := c.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return exitWith(exitUsage, "--batch: %v", err)
		}
		defer f.Close()
		in = f
	}
	api, err := c.connect()
	if err != nil {
		return err
	}
	var chunk [][]byte
	size, sent, requests, dups := 0, 0, 0, 0
	var ids []string
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		hdr := map[string]string{"Content-Type": "application/json"}
		if key != "" {
			hdr["Idempotency-Key"] = fmt.Sprintf("%s:%d", key, requests)
		}
		body := append(append([]byte("["), bytes.Join(chunk, []byte(","))...), ']')
		var ans struct {
			RequestIds []string
			Duplicates int
		}
		if err := api.call(ctx, "POST", "/v1/functions/"+url.PathEscape(fn)+"/invoke-batch", body, hdr, &ans); err != nil {
			return fmt.Errorf("events %d..%d (none of them queued; %d before them were): %w", sent+1, sent+len(chunk), sent, err)
		}
		ids = append(ids, ans.RequestIds...)
		sent, requests, dups = sent+len(chunk), requests+1, dups+ans.Duplicates
		chunk, size = nil, 0
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		ev := bytes.TrimSpace(sc.Bytes())
		if len(ev) == 0 {
			continue
		}
		if !json.Valid(ev) || ev[0] != '{' {
			return exitWith(exitUsage, "--batch line %d: not a JSON object", line)
		}
		if len(chunk) == batchEvents || size+len(ev) > batchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		chunk, size = append(chunk, bytes.Clone(ev)), size+len(ev)
	}
	if err := sc.Err(); err != nil {
		return exitWith(exitUsage, "--batch: %v", err)
	}
	if err := flush(); err != nil {
		return err
	}
	for _, id := range ids {
		fmt.Fprintln(c.stdout, id)
	}
	fmt.Fprintf(c.stderr, "queued %d events in %d requests (%d already queued before)\n", sent, requests, dups)
	return nil
}

// followToEnd streams an invocation's log to its end, then exits as the
// invocation did: its exit code when the job failed (1 if it has none).
// A failed attempt that is retried is followed into the next one.
func (c *cli) followToEnd(ctx context.Context, api *apiClient, id string, exitCode bool) error {
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			fmt.Fprintf(c.stdout, "==> attempt %d\n", attempt)
		}
		if err := c.printLog(ctx, api, id, attempt, true, 0, 0, !c.stdoutIsTerminal()); err != nil {
			return err
		}
		var rec record.Record
		if err := api.call(ctx, "GET", "/v1/invocations/"+url.PathEscape(id), nil, nil, &rec); err != nil {
			return err
		}
		if rec.Status.Terminal() && rec.Attempt == attempt {
			return invocationExit(&rec, exitCode)
		}
		// Retried: wait until the next attempt exists, then follow it.
		for rec.Attempt == attempt && !rec.Status.Terminal() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			if err := api.call(ctx, "GET", "/v1/invocations/"+url.PathEscape(id), nil, nil, &rec); err != nil {
				return err
			}
		}
		if rec.Status.Terminal() && rec.Attempt == attempt {
			return invocationExit(&rec, exitCode)
		}
	}
}

// invocationExit is nil for a FINISHED invocation, else an error whose
// code is the job's exit code (when asked and there is one) or 1.
func invocationExit(rec *record.Record, exitCode bool) error {
	if rec.Status == record.Finished || !rec.Status.Terminal() {
		return nil
	}
	code := exitAPI
	if exitCode && rec.ExitCode != nil && *rec.ExitCode > 0 && *rec.ExitCode < 256 {
		code = *rec.ExitCode
	}
	return exitWith(code, "invocation %s %s (%d): %s", rec.RequestId, rec.Status, rec.StatusCode, rec.Message)
}

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "status REQUEST_ID",
		Short:   "Show an invocation's record",
		Example: "  jobgate status 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc -o yaml",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			var rec record.Record
			if err := api.call(cmd.Context(), "GET", "/v1/invocations/"+url.PathEscape(a[0]), nil, nil, &rec); err != nil {
				return err
			}
			return c.show(&rec, recordHeader, [][]string{recordRow(&rec)}, []string{rec.RequestId})
		},
	}
}

func (c *cli) lsCmd() *cobra.Command {
	var fn, status, cursor string
	var limit int
	cmd := &cobra.Command{
		Use:   "ls [--function F] [--status S]",
		Short: "List invocations, newest first",
		Example: `  jobgate ls --status failed
  jobgate ls --function hello --limit 100 -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"function": fn, "status": strings.ToUpper(status), "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var page struct {
				Invocations []*record.Record
				NextCursor  string `json:",omitempty"`
			}
			if err := api.call(cmd.Context(), "GET", "/v1/invocations?"+q.Encode(), nil, nil, &page); err != nil {
				return err
			}
			var rows [][]string
			var names []string
			for _, r := range page.Invocations {
				rows = append(rows, recordRow(r))
				names = append(names, r.RequestId)
			}
			if err := c.show(&page, recordHeader, rows, names); err != nil {
				return err
			}
			if page.NextCursor != "" && c.output != "json" && c.output != "yaml" {
				fmt.Fprintf(c.stderr, "more: --cursor %s\n", page.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fn, "function", "", "only this function")
	f.StringVar(&status, "status", "", "only this status (pending, running, finished, failed, …; any case)")
	f.IntVar(&limit, "limit", 20, "page size (1..100)")
	f.StringVar(&cursor, "cursor", "", "NextCursor of the previous page")
	return cmd
}

func (c *cli) logsCmd() *cobra.Command {
	var follow bool
	var attempt string
	var tail int
	var since time.Duration
	var rawOut bool
	cmd := &cobra.Command{
		Use:   "logs REQUEST_ID [-f] [--attempt N|all] [--tail N] [--since DURATION]",
		Short: "Print an invocation's log; exits non-zero when the invocation failed",
		Example: `  jobgate logs -f 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc
  jobgate logs 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc --attempt all --tail 20`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			ctx, id := cmd.Context(), a[0]
			var rec record.Record
			if err := api.call(ctx, "GET", "/v1/invocations/"+url.PathEscape(id), nil, nil, &rec); err != nil {
				return err
			}
			first, last := rec.Attempt, rec.Attempt
			switch attempt {
			case "", "latest":
			case "all":
				first = 1
			default:
				n, err := strconv.Atoi(attempt)
				if err != nil || n < 1 || n > rec.Attempt {
					return exitWith(exitUsage, "--attempt %q: want 1..%d or all", attempt, rec.Attempt)
				}
				first, last = n, n
			}
			for n := first; n <= last; n++ {
				if first != last || rec.Attempt > 1 {
					fmt.Fprintf(c.stdout, "==> attempt %d of %d\n", n, rec.Attempt)
				}
				if err := c.printLog(ctx, api, id, n, follow && n == rec.Attempt, tail, since, rawOut || !c.stdoutIsTerminal()); err != nil {
					return err
				}
			}
			if follow {
				if err := api.call(ctx, "GET", "/v1/invocations/"+url.PathEscape(id), nil, nil, &rec); err != nil {
					return err
				}
			}
			return invocationExit(&rec, false)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "follow until the invocation ends")
	f.StringVar(&attempt, "attempt", "", "N, or all (default: the latest)")
	f.IntVar(&tail, "tail", 0, "only the last N lines of each attempt (0: all)")
	f.DurationVar(&since, "since", 0, "only lines newer than this (e.g. 10m)")
	f.BoolVar(&rawOut, "raw", false, "print job output as it is, control characters included (on a terminal they are escaped)")
	return cmd
}

func (c *cli) stdoutIsTerminal() bool {
	f, ok := c.stdout.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// escapeControls makes a job's output safe to print on a terminal: escape
// sequences (ESC, CSI, OSC — colours, window titles, cursor moves, or a
// line that rewrites the ones above it) and other control characters are
// shown as \xNN, tabs kept.
func escapeControls(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// printLog prints one attempt's log (0: the latest), joining the pieces of
// lines split for length.
func (c *cli) printLog(ctx context.Context, api *apiClient, id string, attempt int, follow bool, tail int, since time.Duration, asIs bool) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	if attempt > 0 {
		q.Set("attempt", strconv.Itoa(attempt))
	}
	stream := *api
	stream.timeout = 0 // a log stream lasts as long as the job
	resp, err := stream.open(ctx, "GET", "/v1/invocations/"+url.PathEscape(id)+"/logs?"+q.Encode(), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw := c.output == "json"
	var kept []string // for --tail
	emit := func(s string) {
		if tail > 0 && !follow {
			kept = append(kept, s)
			if len(kept) > tail {
				kept = kept[1:]
			}
			return
		}
		fmt.Fprintln(c.stdout, s)
	}
	cutoff := time.Time{}
	if since > 0 {
		cutoff = time.Now().Add(-since)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	pending := map[string]*logstore.Line{} // partial pieces, per stream
	for sc.Scan() {
		var l logstore.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			emit(sc.Text())
			continue
		}
		if p := pending[l.Stream]; p != nil {
			p.Line += l.Line
			l.TS, l.Line = p.TS, p.Line
		}
		if l.Partial {
			pending[l.Stream] = &l
			continue
		}
		delete(pending, l.Stream)
		if !cutoff.IsZero() && l.TS.Before(cutoff) {
			continue
		}
		if raw {
			b, _ := json.Marshal(l)
			emit(string(b))
			continue
		}
		line := l.Line
		if !asIs {
			line = escapeControls(line)
		}
		emit(fmt.Sprintf("%s %-8s %s", l.TS.Local().Format("15:04:05.000"), l.Stream, line))
	}
	for _, s := range kept {
		fmt.Fprintln(c.stdout, s)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return exitWith(exitUnreachable, "log stream: %v", err)
	}
	return nil
}

func (c *cli) terminateCmd() *cobra.Command {
	var grace bool
	cmd := &cobra.Command{
		Use:     "terminate REQUEST_ID [--grace]",
		Short:   "Stop an invocation (SIGKILL; --grace: SIGTERM, then SIGKILL after stop_grace_s)",
		Example: "  jobgate terminate 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc --grace",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			var rec record.Record
			body := []byte(fmt.Sprintf(`{"GraceShutdown":%t}`, grace))
			if err := api.call(cmd.Context(), "POST", "/v1/invocations/"+url.PathEscape(a[0])+"/terminate", body,
				map[string]string{"Content-Type": "application/json"}, &rec); err != nil {
				return err
			}
			return c.show(&rec, recordHeader, [][]string{recordRow(&rec)}, []string{rec.RequestId})
		},
	}
	cmd.Flags().BoolVar(&grace, "grace", false, "SIGTERM first, SIGKILL after the grace period")
	return cmd
}

func (c *cli) functionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "functions", Aliases: []string{"fn"}, Short: "The configured functions"}
	ls := &cobra.Command{
		Use: "ls", Short: "List the functions", Example: "  jobgate functions ls -o name",
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			var list struct{ Functions []gateway.FunctionView }
			if err := api.call(cmd.Context(), "GET", "/v1/functions", nil, nil, &list); err != nil {
				return err
			}
			var rows [][]string
			var names []string
			for _, f := range list.Functions {
				var trs []string
				for _, t := range f.Triggers {
					trs = append(trs, t.Type+"/"+t.Name)
				}
				rows = append(rows, []string{f.Name, f.Image, strconv.Itoa(f.MemoryMB), strconv.Itoa(f.TimeoutS), strings.Join(trs, ",")})
				names = append(names, f.Name)
			}
			return c.show(&list, []string{"NAME", "IMAGE", "MEMORY MB", "TIMEOUT S", "TRIGGERS"}, rows, names)
		},
	}
	describe := &cobra.Command{
		Use: "describe NAME", Short: "Show a function: image, limits, triggers (routes, next timer fire)",
		Example: "  jobgate functions describe hello -o yaml",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var f gateway.FunctionView
			return c.describeOne(cmd.Context(), "/v1/functions/"+url.PathEscape(a[0]), &f, func() string { return f.Name })
		},
	}
	cmd.AddCommand(ls, describe)
	return cmd
}

func (c *cli) deadlettersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "deadletters", Aliases: []string{"dlq"}, Short: "The dead-letter list: events that ran out of attempts"}
	var kind string
	cmd.PersistentFlags().StringVar(&kind, "kind", "", "invocation (default) or destination: the destinations' failed deliveries")
	// path is an entry's API path, with the list's kind.
	path := func(p string) string {
		if kind == "" {
			return p
		}
		return p + "?kind=" + url.QueryEscape(kind)
	}
	var limit int
	var cursor string
	ls := &cobra.Command{
		Use: "ls", Short: "List dead letters, newest first", Example: "  jobgate deadletters ls -o json",
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			page, err := listDeadLetters(cmd.Context(), api, kind, limit, cursor)
			if err != nil {
				return err
			}
			var rows [][]string
			var names []string
			for _, e := range page.DeadLetters {
				rows = append(rows, []string{e.RequestId, e.Body.FunctionName, strconv.Itoa(e.ErrorCode), e.DeadTime, e.ErrorMessage})
				names = append(names, e.RequestId)
			}
			return c.show(page, []string{"REQUEST ID", "FUNCTION", "CODE", "DEAD", "MESSAGE"}, rows, names)
		},
	}
	ls.Flags().IntVar(&limit, "limit", 20, "page size (1..100)")
	ls.Flags().StringVar(&cursor, "cursor", "", "NextCursor of the previous page")
	show := &cobra.Command{
		Use: "show REQUEST_ID", Short: "Show one dead letter (its event included)", Args: args(cobra.ExactArgs(1)),
		Example: "  jobgate deadletters show 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc -o json",
		RunE: func(cmd *cobra.Command, a []string) error {
			var e deadletter.Entry
			return c.describeOne(cmd.Context(), path("/v1/deadletters/"+url.PathEscape(a[0])), &e, func() string { return e.RequestId })
		},
	}
	var all bool
	var fn string
	redrive := &cobra.Command{
		Use:   "redrive [REQUEST_ID | --all [--function F]]",
		Short: "Run dead-lettered events again",
		Example: `  jobgate deadletters redrive 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc
  jobgate deadletters redrive --all --function hello`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if all == (len(a) == 1) {
				return exitWith(exitUsage, "give a REQUEST_ID or --all")
			}
			api, err := c.connect()
			if err != nil {
				return err
			}
			ids := a
			if all {
				for cur := ""; ; {
					page, err := listDeadLetters(cmd.Context(), api, kind, 100, cur)
					if err != nil {
						return err
					}
					for _, e := range page.DeadLetters {
						if fn == "" || e.Body.FunctionName == fn {
							ids = append(ids, e.RequestId)
						}
					}
					if cur = page.NextCursor; cur == "" {
						break
					}
				}
			}
			for _, id := range ids {
				var rec record.Record
				if err := api.call(cmd.Context(), "POST", path("/v1/deadletters/"+url.PathEscape(id)+"/redrive"), nil, nil, &rec); err != nil {
					return err
				}
				if kind == "destination" {
					fmt.Fprintf(c.stdout, "redriven %s (delivered again)\n", id)
					continue
				}
				fmt.Fprintf(c.stdout, "redriven %s → %s attempt %d\n", id, rec.RequestId, rec.Attempt)
			}
			if len(ids) == 0 {
				fmt.Fprintln(c.stderr, "no dead letters to redrive")
			}
			return nil
		},
	}
	redrive.Flags().BoolVar(&all, "all", false, "every dead letter (of --function)")
	redrive.Flags().StringVar(&fn, "function", "", "with --all: only this function's")
	purge := &cobra.Command{
		Use: "purge REQUEST_ID", Short: "Delete a dead letter", Args: args(cobra.ExactArgs(1)),
		Example: "  jobgate deadletters purge 5d0a9062-0691-5a4a-830e-6a43b4f6d8bc",
		RunE: func(cmd *cobra.Command, a []string) error {
			api, err := c.connect()
			if err != nil {
				return err
			}
			if err := api.call(cmd.Context(), "DELETE", path("/v1/deadletters/"+url.PathEscape(a[0])), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "purged", a[0])
			return nil
		},
	}
	cmd.AddCommand(ls, show, redrive, purge)
	return cmd
}

type deadLetterPage struct {
	DeadLetters []*deadletter.Entry
	NextCursor  string `json:",omitempty"`
}

func listDeadLetters(ctx context.Context, api *apiClient, kind string, limit int, cursor string) (*deadLetterPage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if kind != "" {
		q.Set("kind", kind)
	}
	var page deadLetterPage
	return &page, api.call(ctx, "GET", "/v1/deadletters?"+q.Encode(), nil, nil, &page)
}
