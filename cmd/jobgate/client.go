package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/logstore"
)

func itoa(n int) string { return strconv.Itoa(n) }

// apiClient talks to a gateway: --url, else $JOBGATE_URL, else the
// config's gateway.listen. $JOBGATE_TOKEN is sent as a bearer token.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func clientFlags(fs *flag.FlagSet) func() (*apiClient, error) {
	u := fs.String("url", "", "gateway URL (default $JOBGATE_URL, else http://<gateway.listen> from --config)")
	cfgPath := fs.String("config", "jobgate.yaml", "config file, for the gateway address")
	return func() (*apiClient, error) {
		base := *u
		if base == "" {
			base = os.Getenv("JOBGATE_URL")
		}
		if base == "" {
			cfg, err := config.Load(*cfgPath)
			if err != nil {
				return nil, fmt.Errorf("no --url or $JOBGATE_URL, and %w", err)
			}
			base = "http://" + cfg.Gateway.Listen
		}
		return &apiClient{base: strings.TrimRight(base, "/"), token: os.Getenv("JOBGATE_TOKEN"), http: &http.Client{}}, nil
	}
}

func (c *apiClient) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// printJSON copies a JSON answer to stdout, indented; non-2xx is an error.
func printJSON(resp *http.Response) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		out.Reset()
		out.Write(b)
	}
	os.Stdout.Write(out.Bytes())
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("gateway answered %s", resp.Status)
	}
	return nil
}

// parseInterspersed lets flags follow positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) []string {
	var pos []string
	for {
		_ = fs.Parse(args)
		if fs.NArg() == 0 {
			return pos
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func invoke(args []string) error {
	fs := flag.NewFlagSet("invoke", flag.ExitOnError)
	connect := clientFlags(fs)
	eventPath := fs.String("event", "", "event JSON file, or - for stdin (default {})")
	wait := fs.String("wait", "scheduled", "none: answer once queued; scheduled: once started")
	key := fs.String("idempotency-key", "", "dedupe key: the same key runs once")
	pos := parseInterspersed(fs, args)
	if len(pos) != 1 {
		return fmt.Errorf("usage: jobgate invoke FUNCTION [--event FILE|-] [--wait none|scheduled]")
	}
	event := []byte("{}")
	switch *eventPath {
	case "":
	case "-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		event = b
	default:
		b, err := os.ReadFile(*eventPath)
		if err != nil {
			return err
		}
		event = b
	}
	c, err := connect()
	if err != nil {
		return err
	}
	hdr := map[string]string{"Content-Type": "application/json"}
	if *key != "" {
		hdr["Idempotency-Key"] = *key
	}
	resp, err := c.do("POST", "/v1/functions/"+url.PathEscape(pos[0])+"/invoke?wait="+url.QueryEscape(*wait), bytes.NewReader(event), hdr)
	if err != nil {
		return err
	}
	return printJSON(resp)
}

func status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ExitOnError)
	connect := clientFlags(fs)
	pos := parseInterspersed(fs, args)
	if len(pos) != 1 {
		return fmt.Errorf("usage: jobgate status ID")
	}
	c, err := connect()
	if err != nil {
		return err
	}
	resp, err := c.do("GET", "/v1/invocations/"+url.PathEscape(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return printJSON(resp)
}

func list(args []string) error {
	fs := flag.NewFlagSet("ls", flag.ExitOnError)
	connect := clientFlags(fs)
	fn := fs.String("function", "", "only this function")
	st := fs.String("status", "", "only this status (PENDING, RUNNING, FINISHED, FAILED, ...)")
	limit := fs.Int("limit", 20, "page size (1..100)")
	cursor := fs.String("cursor", "", "NextCursor of the previous page")
	parseInterspersed(fs, args)
	c, err := connect()
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"function": *fn, "status": *st, "cursor": *cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	resp, err := c.do("GET", "/v1/invocations?"+q.Encode(), nil, nil)
	if err != nil {
		return err
	}
	return printJSON(resp)
}

func logs(args []string) error {
	fs := flag.NewFlagSet("logs", flag.ExitOnError)
	connect := clientFlags(fs)
	follow := fs.Bool("f", false, "follow until the instance ends")
	raw := fs.Bool("json", false, "print the NDJSON lines as they are")
	attempt := fs.Int("attempt", 0, "the attempt's log (default: the latest)")
	pos := parseInterspersed(fs, args)
	if len(pos) != 1 {
		return fmt.Errorf("usage: jobgate logs [-f] ID")
	}
	c, err := connect()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *follow {
		q.Set("follow", "1")
	}
	if *attempt > 0 {
		q.Set("attempt", strconv.Itoa(*attempt))
	}
	path := "/v1/invocations/" + url.PathEscape(pos[0]) + "/logs?" + q.Encode()
	resp, err := c.do("GET", path, nil, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return printJSON(resp)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	// A line too long for one record comes in pieces marked partial:
	// joined per stream, printed once whole.
	pending := map[string]*logstore.Line{}
	for sc.Scan() {
		if *raw {
			fmt.Println(sc.Text())
			continue
		}
		var l logstore.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			fmt.Println(sc.Text())
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
		fmt.Printf("%s %-8s %s\n", l.TS.Local().Format("15:04:05.000"), l.Stream, l.Line)
	}
	return sc.Err()
}

func terminate(args []string) error {
	fs := flag.NewFlagSet("terminate", flag.ExitOnError)
	connect := clientFlags(fs)
	grace := fs.Bool("grace", false, "SIGTERM first, SIGKILL after the grace period (default: SIGKILL)")
	pos := parseInterspersed(fs, args)
	if len(pos) != 1 {
		return fmt.Errorf("usage: jobgate terminate ID [--grace]")
	}
	c, err := connect()
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`{"GraceShutdown":%t}`, *grace)
	resp, err := c.do("POST", "/v1/invocations/"+url.PathEscape(pos[0])+"/terminate", strings.NewReader(body),
		map[string]string{"Content-Type": "application/json"})
	if err != nil {
		return err
	}
	return printJSON(resp)
}

func deadletters(args []string) error {
	fs := flag.NewFlagSet("deadletters", flag.ExitOnError)
	connect := clientFlags(fs)
	limit := fs.Int("limit", 20, "page size (1..100)")
	cursor := fs.String("cursor", "", "NextCursor of the previous page")
	pos := parseInterspersed(fs, args)
	usage := fmt.Errorf("usage: jobgate deadletters ls | show ID | redrive ID | purge ID")
	if len(pos) == 0 {
		return usage
	}
	c, err := connect()
	if err != nil {
		return err
	}
	var resp *http.Response
	switch {
	case pos[0] == "ls" && len(pos) == 1:
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		resp, err = c.do("GET", "/v1/deadletters?"+q.Encode(), nil, nil)
	case pos[0] == "show" && len(pos) == 2:
		resp, err = c.do("GET", "/v1/deadletters/"+url.PathEscape(pos[1]), nil, nil)
	case pos[0] == "redrive" && len(pos) == 2:
		resp, err = c.do("POST", "/v1/deadletters/"+url.PathEscape(pos[1])+"/redrive", nil, nil)
	case pos[0] == "purge" && len(pos) == 2:
		resp, err = c.do("DELETE", "/v1/deadletters/"+url.PathEscape(pos[1]), nil, nil)
	default:
		return usage
	}
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		fmt.Println("purged", pos[1])
		return nil
	}
	return printJSON(resp)
}
