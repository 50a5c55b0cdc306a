package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/worker"
	"github.com/jobgate/jobgate/worker/runtime"
)

// pull fetches and unpacks an image into the worker's containerd (same
// registries, credentials and image policy as the worker), drawing a
// progress bar per blob.
func pull(ctx context.Context, cfgPath, ref string, out io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	rt, err := runtime.New(ctx, runtime.Options{
		Address: cfg.Containerd.Address, Namespace: cfg.Containerd.Namespace, Snapshotter: cfg.Containerd.Snapshotter,
		Registries: worker.RuntimeRegistries(cfg), DockerConfig: cfg.Worker.DockerConfig, MaxImageBytes: int64(cfg.Worker.MaxImageMB) << 20,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Worker.PullTimeout())
	defer cancel()
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = isTerminal(f)
	}
	bar := &progressBar{out: out, tty: tty}
	t0 := time.Now()
	img, err := rt.EnsureImageProgress(ctx, ref, bar.draw)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s (unpacked, %s)\n", ref, img.Digest, time.Since(t0).Round(time.Millisecond))
	return nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressBar draws one line per blob: in place on a terminal, otherwise
// at most once a second and once at the end.
type progressBar struct {
	out   io.Writer
	tty   bool
	lines int
	last  time.Time
}

func (p *progressBar) draw(layers []runtime.LayerProgress) {
	complete := true
	for _, l := range layers {
		complete = complete && l.Done >= l.Total
	}
	if !p.tty && !complete && time.Since(p.last) < time.Second {
		return
	}
	p.last = time.Now()
	var b strings.Builder
	if p.tty && p.lines > 0 {
		fmt.Fprintf(&b, "\033[%dA", p.lines)
	}
	var done, total int64
	for _, l := range layers {
		b.WriteString(progressLine(l))
		done, total = done+l.Done, total+l.Total
	}
	fmt.Fprintf(&b, "total %s / %s\033[K\n", humanBytes(done), humanBytes(total))
	if !p.tty {
		b.WriteString("\n")
	}
	p.lines = len(layers) + 1
	text := b.String()
	if !p.tty {
		text = strings.ReplaceAll(text, "\033[K", "")
	}
	_, _ = io.WriteString(p.out, text)
}

// progressLine renders "sha256:0123456789ab [=====>     ]  1.2 MB / 3.4 MB".
func progressLine(l runtime.LayerProgress) string {
	const width = 30
	frac := 1.0
	if l.Total > 0 {
		frac = min(float64(l.Done)/float64(l.Total), 1)
	}
	filled := int(frac * width)
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	d := l.Digest
	if len(d) > 19 {
		d = d[:19]
	}
	return fmt.Sprintf("%s [%s] %9s / %-9s\033[K\n", d, bar, humanBytes(l.Done), humanBytes(l.Total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
