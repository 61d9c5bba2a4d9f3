package target

import (
	"context"
	"time"
)

// SendContext returns the context of one write about to be sent to an
// HAProxy on ctx (a Data Plane API request, a command on its sockets),
// bounded by timeout and by ctx's deadline; or, sending nothing, ctx's
// error when ctx is done already.
//
// Unlike ctx, the returned context is not canceled when ctx is: a write
// once sent is waited for until its answer is read (or the bound passes),
// not abandoned. The other side carries a write out whether or not its
// client still waits (the Data Plane API does not stop a handler when the
// client goes; HAProxy runs the commands it has read), so an abandoned write
// can land later, when this controller has stopped and resigned the
// election and the next leader writes: a runtime `set server` carries no
// version that would fence it. Waiting keeps every answered write of this
// instance before its resignation (see app.runLeading).
func SendContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl // (WithoutCancel drops ctx's deadline: kept here)
	}
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	return sctx, cancel, nil
}
