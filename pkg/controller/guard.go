package controller

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// panicGuard makes a panic in the controller's goroutines loud instead of
// silent: it is logged with its stack, /healthz answers 500 and status is not
// ready, and Run returns an error so the process exits (and its supervisor
// restarts it). Nothing keeps running on state a panic may have left
// half-updated.
type panicGuard struct {
	failed atomic.Pointer[string]
	once   sync.Once
	done   chan struct{} // closed on the first panic
}

func newPanicGuard() *panicGuard { return &panicGuard{done: make(chan struct{})} }

// recover is deferred by every controller goroutine.
func (c *Controller) recoverPanic(where string) {
	r := recover()
	if r == nil {
		return
	}
	msg := fmt.Sprintf("%s panicked: %v", where, r)
	c.log.Error("controller bug: "+msg+"; stopping the controller", zap.String("stack", string(debug.Stack())))
	c.guard.failed.CompareAndSwap(nil, &msg)
	c.guard.once.Do(func() { close(c.guard.done) })
}

// Failed returns why the controller stopped after a panic ("" when it did not).
func (c *Controller) Failed() string {
	if p := c.guard.failed.Load(); p != nil {
		return *p
	}
	return ""
}

// panicWaitLimit bounds how long Run waits for the other goroutines after a
// panic: the panicking one may hold a lock they need.
const panicWaitLimit = 5 * time.Second

// waitAfter runs wait (which waits for the controller's goroutines to end)
// and returns when it does, or at most panicWaitLimit once a panic
// happened.
func (c *Controller) waitAfter(wait func()) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
		return
	case <-c.guard.done:
	}
	select {
	case <-done:
	case <-time.After(panicWaitLimit):
		c.log.Error("goroutines still running after a panic; returning anyway")
	}
}
