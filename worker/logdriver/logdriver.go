// Package logdriver is the program containerd's shim runs beside each job
// (cio.BinaryIO) to copy its stdout and stderr, line by line, into the log
// store. It is the jobgate binary itself, re-executed with Arg; because
// the shim owns it, a job's output is captured even while the worker is
// down, and the job never blocks on a full pipe.
package logdriver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/containerd/runtime/v2/logging"

	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/worker/stub"
)

// Arg is the hidden first argument that makes jobgate act as the driver.
const Arg = "_jobgate_logger"

// maxLine splits longer lines so one line cannot exhaust memory.
const maxLine = 64 << 10

// Settings tell the driver where to write. They are passed by file, not on
// the command line, so the Redis password is not visible in ps.
type Settings struct {
	Redis       redisconn.Target `json:"redis"`
	Prefix      string           `json:"prefix"`
	RetentionMs int64            `json:"retention_ms"`
	MaxBytes    int64            `json:"max_bytes"`
	// RunDirs holds provisioned instances' run directories: a pooled
	// container's output goes under the instance id it was released to.
	RunDirs string `json:"run_dirs,omitempty"`
}

// WriteSettings stores s at path, readable by root only.
func WriteSettings(path string, s Settings) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write logger settings: %w", err)
	}
	return os.Rename(tmp, path)
}

// Args returns the cio.BinaryIO arguments for a settings file.
func Args(settingsPath string) map[string]string { return map[string]string{Arg: settingsPath} }

// Main runs the driver; args are os.Args[2:] (the settings path). It
// never returns.
func Main(args []string) {
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		if len(args) < 1 {
			return errors.New("jobgate logger: missing settings path")
		}
		return run(ctx, args[0], cfg, ready)
	})
}

func run(ctx context.Context, settingsPath string, cfg *logging.Config, ready func() error) error {
	raw, err := os.ReadFile(settingsPath)
	if err != nil {
		return fmt.Errorf("jobgate logger: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("jobgate logger: settings: %w", err)
	}
	rdb, err := s.Redis.Client()
	if err != nil {
		return fmt.Errorf("jobgate logger: %w", err)
	}
	defer rdb.Close()
	store := logstore.NewStore(rdb, s.Prefix, time.Duration(s.RetentionMs)*time.Millisecond, s.MaxBytes)

	lines := make(chan logstore.Line, 1024)
	var readers sync.WaitGroup
	for _, src := range []struct {
		r      io.Reader
		stream string
	}{{cfg.Stdout, logstore.Stdout}, {cfg.Stderr, logstore.Stderr}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			scan(src.r, src.stream, lines)
		}()
	}
	if err := ready(); err != nil {
		return fmt.Errorf("jobgate logger: ready: %w", err)
	}
	go func() { readers.Wait(); close(lines) }()
	// A provisioned instance's container id is the pool's; it learns its
	// instance id when released, before it prints anything.
	id := cfg.ID
	spool := SpoolDir(filepath.Dir(settingsPath))
	if s.RunDirs != "" {
		var once sync.Once
		resolve := func() string { once.Do(func() { id = stub.LogInstance(s.RunDirs, cfg.ID) }); return id }
		return ship(ctx, store, spool, resolve, lines)
	}
	return ship(ctx, store, spool, func() string { return id }, lines)
}

// scan reads one stream into lines until EOF. The pipes reach EOF when
// the shim closes them (task delete), after the process has exited. A
// line longer than maxLine is cut into pieces on UTF-8 character
// boundaries (a cut inside a character would store both halves as
// U+FFFD); every piece but the last is marked partial.
func scan(r io.Reader, stream string, out chan<- logstore.Line) { scanSized(r, stream, out, maxLine) }

// scanSized is scan with pieces of at most size bytes (the fuzz test uses
// a small size, so short inputs exercise the splitting).
func scanSized(r io.Reader, stream string, out chan<- logstore.Line, size int) {
	br := bufio.NewReaderSize(r, size)
	var carry []byte     // the start of a character cut off the last piece
	lastPartial := false // the line's last piece is still to come
	for {
		b, err := br.ReadSlice('\n')
		full := errors.Is(err, bufio.ErrBufferFull)
		// The output ended right after a partial piece (a line of exactly
		// a multiple of maxLine with no newline): close the line.
		if len(b) == 0 && len(carry) == 0 && err != nil && !full && lastPartial {
			out <- logstore.Line{TS: time.Now().UTC(), Stream: stream}
		}
		if len(b) > 0 || len(carry) > 0 {
			piece := append(append(make([]byte, 0, len(carry)+len(b)), carry...), b...)
			carry = nil
			if full {
				cut := lastCharBoundary(piece)
				piece, carry = piece[:cut], piece[cut:]
			} else if n := len(piece); n > 0 && piece[n-1] == '\n' {
				piece = piece[:n-1]
			}
			out <- logstore.Line{TS: time.Now().UTC(), Stream: stream, Line: string(piece), Partial: full}
			lastPartial = full
		}
		if err != nil && !full {
			return
		}
	}
}

// lastCharBoundary is where p can be cut without splitting a UTF-8
// character: len(p) unless p ends inside one. Bytes that are not UTF-8
// are cut anywhere.
func lastCharBoundary(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if utf8.FullRune(p[i:]) {
				return len(p)
			}
			return i
		}
	}
	return len(p)
}

// ship writes lines in batches. Redis errors are retried: the pipe fills
// and the job waits rather than losing output. After SIGTERM (ctx done:
// the task was deleted, and the shim kills the driver 12 s later) lines
// that still cannot land go to the spool directory, from which the
// worker replays them (ReplaySpool).
func ship(ctx context.Context, store *logstore.Store, spool string, idOf func() string, lines <-chan logstore.Line) error {
	const maxBatch = 256
	batch := make([]logstore.Line, 0, maxBatch)
	spooling := false // Redis failed after SIGTERM: no more waiting on it
	flush := func() {
		for attempt := 0; len(batch) > 0; attempt++ {
			id := idOf()
			if spooling {
				if err := spoolLines(spool, id, batch); err != nil {
					fmt.Fprintf(os.Stderr, "jobgate logger %s: dropping %d lines: %v\n", id, len(batch), err)
				}
				batch = batch[:0]
				return
			}
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			err := store.Append(wctx, id, batch)
			cancel()
			if err == nil {
				batch = batch[:0]
				return
			}
			if ctx.Err() != nil && attempt >= 1 {
				spooling = true
				continue
			}
			time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				flush()
				return nil
			}
			batch = append(batch, l)
			if len(batch) == maxBatch {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}
