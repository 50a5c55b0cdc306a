package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/version"
	"github.com/jobgate/jobgate/worker"
)

// Exit codes (docs/OPERATIONS.md, "CLI").
const (
	exitOK          = 0
	exitAPI         = 1 // the gateway refused (4xx/5xx other than below), or the job failed
	exitUsage       = 2 // bad command line
	exitNotFound    = 3
	exitAuth        = 4 // 401, 403
	exitUnreachable = 5 // no connection, or --timeout
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitWith(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// cli is what every command shares: the global flags and the streams.
type cli struct {
	url, token, cfgPath, output string
	timeout                     time.Duration
	stdin                       io.Reader
	stdout, stderr              io.Writer
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := c.root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "jobgate:", err)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case isUsage(err):
		return exitUsage
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return exitUnreachable
	}
	return exitAPI
}

// usageError marks command-line mistakes that cobra reports as plain
// errors (unknown flags and commands, wrong argument counts).
func isUsage(err error) bool {
	msg := err.Error()
	for _, s := range []string{"unknown flag", "unknown shorthand", "unknown command", "accepts ", "requires ", "flag needs an argument", "invalid argument", "required flag"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "jobgate",
		Short: "Run SCF-style job image functions on your own machines",
		Long: `jobgate runs Tencent Cloud SCF's job image functions: events from timers, webhooks, the
invoke API and message queues each start a container.

"jobgate serve" runs the gateway and worker; the other commands talk to a running gateway
(--url, $JOBGATE_URL, else gateway.listen from --config; token from --token or $JOBGATE_TOKEN).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().Version,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.url, "url", "", "gateway URL (default $JOBGATE_URL, else http://<gateway.listen> from --config)")
	pf.StringVar(&c.token, "token", "", "API bearer token (default $JOBGATE_TOKEN)")
	pf.StringVar(&c.cfgPath, "config", "jobgate.yaml", "config file")
	pf.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up on a request after this long (log streams excepted)")
	pf.StringVarP(&c.output, "output", "o", "", "output format: table, json, yaml or name (default table on a terminal, json otherwise)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	root.AddCommand(c.serveCmd(), c.validateCmd(), c.pullCmd(), c.invokeCmd(), c.statusCmd(), c.lsCmd(), c.logsCmd(),
		c.terminateCmd(), c.functionsCmd(), c.deadlettersCmd(), c.versionCmd(), c.installLoggerCmd())
	return root
}

// args wraps a cobra positional-argument check as a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("%w\nusage: %s", err, cmd.UseLine())}
		}
		return nil
	}
}

func (c *cli) serveCmd() *cobra.Command {
	var role, level string
	cmd := &cobra.Command{
		Use:   "serve [--role all|gateway|worker]",
		Short: "Run the gateway and the worker (or one of them)",
		Example: `  jobgate serve --config /etc/jobgate/jobgate.yaml
  jobgate serve --role worker --config jobgate.yaml   # one per host, against a shared Redis`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return serve(c.cfgPath, role, level) },
	}
	cmd.Flags().StringVar(&role, "role", "all", "roles to run: all, gateway or worker")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level")
	return cmd
}

func (c *cli) validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "validate [CONFIG]",
		Short:   "Check a config file (every problem as file:line: key: problem)",
		Example: "  jobgate validate deploy/sample/jobgate.yaml",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			path := c.cfgPath
			if len(a) == 1 {
				path = a[0]
			}
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{code: exitAPI, err: err}
			}
			fmt.Fprintf(c.stdout, "%s: ok (%d functions)\n", path, len(cfg.Functions))
			for _, w := range cfg.Warnings() {
				fmt.Fprintf(c.stderr, "warning: %s: %s: %s\n", path, w.Path, w.Message)
			}
			// What this installation would lack as a worker: warnings,
			// not errors (the config itself is fine).
			if bin, err := worker.LoggerBinary(cfg); err == nil {
				for _, d := range worker.InstallNotes(bin) {
					fmt.Fprintln(c.stderr, "warning:", d)
				}
			}
			return nil
		},
	}
}

func (c *cli) pullCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "pull IMAGE",
		Short:   "Pull and unpack an image into the worker's containerd, with a progress bar per blob",
		Example: "  jobgate pull registry.example.com/team/job:1 --config jobgate.yaml",
		Args:    args(cobra.ExactArgs(1)),
		RunE:    func(cmd *cobra.Command, a []string) error { return pull(cmd.Context(), c.cfgPath, a[0], c.stdout) },
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print jobgate's version, commit and Go version",
		Example: "  jobgate version\n  jobgate version -o json",
		Args:    args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			v := version.Get()
			commit := v.Commit
			if commit == "" {
				commit = "unknown"
			}
			if v.Modified {
				commit += " (modified)"
			}
			if c.output == "json" {
				return printValue(c.stdout, "json", v)
			}
			fmt.Fprintf(c.stdout, "jobgate %s\ncommit  %s\ngo      %s\n", v.Version, commit, v.GoVersion)
			return nil
		},
	}
}

func (c *cli) installLoggerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "install-logger DIR",
		Short: "Copy the static jobgate-logger next to jobgate into DIR (a host path the worker's logger_binary names)",
		Long: `containerd's shim runs the log driver on the host, so in a container the worker's
worker.logger_binary must name a path that exists on the host too: this copies jobgate-logger
there (atomically), e.g. from a Kubernetes initContainer into a hostPath.`,
		Example: "  jobgate install-logger /var/lib/jobgate/bin",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, a []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			src := filepath.Join(filepath.Dir(exe), "jobgate-logger")
			b, err := os.ReadFile(src)
			if err != nil {
				return fmt.Errorf("install-logger: %w", err)
			}
			if err := os.MkdirAll(a[0], 0o755); err != nil {
				return fmt.Errorf("install-logger: %w", err)
			}
			dst := filepath.Join(a[0], "jobgate-logger")
			if err := os.WriteFile(dst+".tmp", b, 0o755); err != nil {
				return fmt.Errorf("install-logger: %w", err)
			}
			if err := os.Rename(dst+".tmp", dst); err != nil {
				return fmt.Errorf("install-logger: %w", err)
			}
			fmt.Fprintln(c.stdout, "installed", dst)
			return nil
		},
	}
}

// connect builds the API client from the global flags.
func (c *cli) connect() (*apiClient, error) {
	base := c.url
	if base == "" {
		base = os.Getenv("JOBGATE_URL")
	}
	if base == "" {
		cfg, err := config.Load(c.cfgPath)
		if err != nil {
			return nil, exitWith(exitUsage, "no --url or $JOBGATE_URL, and %v", err)
		}
		base = "http://" + cfg.Gateway.Listen
	}
	token := c.token
	if token == "" {
		token = os.Getenv("JOBGATE_TOKEN")
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, timeout: c.timeout}, nil
}
