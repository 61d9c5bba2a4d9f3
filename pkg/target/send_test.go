package target

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSendContext: nothing is sent on a done ctx; the context of a write
// sent outlives ctx's cancel and keeps its values, and is bounded by the
// timeout and by ctx's deadline.
func TestSendContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := SendContext(ctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("done ctx: %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(WithWriteCheck(context.Background(), func() error { return ErrNotLeader }))
	sctx, scancel, err := SendContext(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer scancel()
	cancel()
	if sctx.Err() != nil {
		t.Fatalf("canceled with ctx: %v", sctx.Err())
	}
	if !errors.Is(CheckWrite(sctx), ErrNotLeader) {
		t.Error("ctx's values lost")
	}
	if dl, ok := sctx.Deadline(); !ok || time.Until(dl) < 59*time.Minute {
		t.Errorf("deadline %v (%v), want the timeout's", dl, ok)
	}

	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, _ := ctx.Deadline()
	sctx, scancel, err = SendContext(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer scancel()
	if dl, _ := sctx.Deadline(); !dl.Equal(want) {
		t.Errorf("deadline %v, want ctx's %v", dl, want)
	}

	sctx, scancel, err = SendContext(context.Background(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer scancel()
	select {
	case <-sctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the timeout did not end it")
	}
}
