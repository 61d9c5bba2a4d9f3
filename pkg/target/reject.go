package target

import (
	"context"
	"errors"
)

// Rejecter is implemented by errors that mean the HAProxy refused the
// content it was given (a config `haproxy -c` rejects, a reload that fails
// to load it, an API that answers 400/422 to a config change), as opposed
// to a failure to reach it. The controller then looks for the clusters
// whose services cause it and holds only those back.
type Rejecter interface {
	Rejected() bool
}

// RejectedError marks err as a rejection of the desired content.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string  { return e.Err.Error() }
func (e *RejectedError) Unwrap() error  { return e.Err }
func (e *RejectedError) Rejected() bool { return true }

// Reject marks err (nil stays nil) as a rejection of the desired content.
func Reject(err error) error {
	if err == nil {
		return nil
	}
	return &RejectedError{Err: err}
}

// IsRejected reports whether err says the HAProxy refused the content.
func IsRejected(err error) bool {
	var r Rejecter
	return errors.As(err, &r) && r.Rejected()
}

// ErrNotLeader is returned by CheckWrite (and so by Apply) when this
// controller instance may no longer write: its leadership ended, or began
// again in a newer term than the work in hand. Nothing was written.
var ErrNotLeader = errors.New("no longer the elected controller for this work: write dropped")

type writeCheckKey struct{}

// WithWriteCheck returns a context carrying check, which drivers call
// (through CheckWrite) right before every write to an HAProxy: installing a
// file, a reload, a runtime command, a commit. A controller paused in the
// middle of an apply (SIGSTOP, a long GC, a stalled disk) thus re-checks its
// lease when it resumes, before it can undo a newer leader's work.
func WithWriteCheck(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, writeCheckKey{}, check)
}

// CheckWrite runs the context's write check, if any.
func CheckWrite(ctx context.Context) error {
	if f, ok := ctx.Value(writeCheckKey{}).(func() error); ok && f != nil {
		return f()
	}
	return nil
}
