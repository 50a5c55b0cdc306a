package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
)

func newLogger(level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var l zerolog.Logger
	if isatty.IsTerminal(os.Stderr.Fd()) {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(lvl).With().Timestamp().Logger()
}

// serve runs the node's roles until SIGINT/SIGTERM.
func serve(cfgPath, role, level string) error {
	log := newLogger(level)

	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		log.Warn().Str("key", w.Path).Msg(w.Message)
	}
	// First signal: drain and stop. Second: exit at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(ctx, cfg, node.Options{Role: role, Tokens: node.TokensFromEnv(), Logger: log})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Stop(context.Background())
		return err
	}
	log.Info().Str("role", role).Str("config", cfgPath).Int("functions", len(cfg.Functions)).Msg("jobgate serving")
	// SIGHUP: re-read the config; the worker applies function changes
	// (see node.Reload for what needs a restart instead).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			next, err := config.Load(cfgPath)
			if err != nil {
				log.Error().Err(err).Msg("SIGHUP: config not reloaded (the running one stays)")
				continue
			}
			if err := n.Reload(ctx, next); err != nil {
				log.Error().Err(err).Msg("SIGHUP: reloaded with errors (see above)")
			}
		}
	}
	stop()
	go func() {
		hard := make(chan os.Signal, 1)
		signal.Notify(hard, os.Interrupt, syscall.SIGTERM)
		<-hard
		log.Warn().Msg("second signal: exiting now")
		os.Exit(1)
	}()
	log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return n.Stop(sctx)
}
