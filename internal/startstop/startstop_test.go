package startstop

import (
	"context"
	"errors"
	"testing"
)

func TestStopCancelsAndWaits(t *testing.T) {
	t.Parallel()
	g := Start(context.Background())
	ended := make(chan struct{})
	g.Go(func(ctx context.Context) {
		<-ctx.Done()
		close(ended)
	})
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before the goroutine ended")
	}
}

func TestStartIgnoresParentCancellation(t *testing.T) {
	t.Parallel()
	parent, cancel := context.WithCancel(context.Background())
	g := Start(parent)
	cancel()
	if g.Context().Err() != nil {
		t.Fatal("the group's context ended with its parent")
	}
	_ = g.Stop(context.Background())
	if g.Context().Err() == nil {
		t.Fatal("the group's context is live after Stop")
	}
}

func TestStopGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	g := Start(context.Background())
	release := make(chan struct{})
	g.Go(func(context.Context) { <-release })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	close(release)
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	var nilGroup *Group
	if err := nilGroup.Stop(context.Background()); err != nil {
		t.Fatalf("nil group: %v", err)
	}
}
