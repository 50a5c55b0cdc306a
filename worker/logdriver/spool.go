package logdriver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jobgate/jobgate/internal/logstore"
)

// SpoolDir is where drivers whose settings are in stateDir spool the lines
// Redis did not take before the shim stopped them.
func SpoolDir(stateDir string) string { return filepath.Join(stateDir, "logspool") }

// spoolLines appends lines to id's spool file (one JSON line each).
func spoolLines(dir, id string, lines []logstore.Line) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool %s: %w", id, err)
	}
	return appendLines(filepath.Join(dir, id+".jsonl"), lines)
}

// appendLines appends lines to the file at path and syncs it.
func appendLines(path string, lines []logstore.Line) error {
	id := filepath.Base(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool %s: %w", id, err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			f.Close()
			return fmt.Errorf("spool %s: %w", id, err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("spool %s: %w", id, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("spool %s: %w", id, err)
	}
	return f.Close()
}

// ReplaySpool appends every spooled log to the store and removes the
// files that landed; it returns how many lines it replayed. A spooled log
// lands after its end marker: readers see it on their next read.
func ReplaySpool(ctx context.Context, store *logstore.Store, dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return 0, err
	}
	return replay(ctx, store, files)
}

// ReplayInstance replays one log's spool, if any (the worker, before it
// writes the log's end).
func ReplayInstance(ctx context.Context, store *logstore.Store, dir, id string) (int, error) {
	path := filepath.Join(dir, id+".jsonl")
	if _, err := os.Stat(path); err != nil {
		return 0, nil
	}
	return replay(ctx, store, []string{path})
}

func replay(ctx context.Context, store *logstore.Store, files []string) (int, error) {
	n := 0
	var errs []error
	for _, path := range files {
		id := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		lines, err := readSpool(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for start := 0; start < len(lines); start += 256 {
			if err := store.Append(ctx, id, lines[start:min(start+256, len(lines))]); err != nil {
				return n, errors.Join(append(errs, err)...) // Redis is still away: next time
			}
		}
		// A driver may still be appending (lines not yet replayed are
		// kept): remove only what was read, by size.
		if err := truncateRead(path, lines); err != nil {
			errs = append(errs, err)
		}
		n += len(lines)
	}
	return n, errors.Join(errs...)
}

func readSpool(path string) ([]logstore.Line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logstore.Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4*maxLine)
	for sc.Scan() {
		var l logstore.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			break // a line cut by a crash mid-write: the rest is lost with it
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// truncateRead removes a replayed spool file; a driver that appended to
// it meanwhile has its new lines kept for the next replay.
func truncateRead(path string, replayed []logstore.Line) error {
	lines, err := readSpool(path)
	if err != nil {
		return err
	}
	if len(lines) == len(replayed) {
		return os.Remove(path)
	}
	return spoolRewrite(path, lines[len(replayed):])
}

func spoolRewrite(path string, rest []logstore.Line) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := appendLines(tmp, rest); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
