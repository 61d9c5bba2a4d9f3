package dataplaneapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
)

// TestWriteOutlivesCancel: a write request the API has received is waited
// for until its answer when ctx is canceled (the controller stopping): the
// API carries it out whether or not the client still waits, so abandoning
// it would let it land after this instance resigned. A write on a done ctx
// is not sent; a read is still given up at the cancel.
func TestWriteOutlivesCancel(t *testing.T) {
	got := make(chan string, 4)
	release := make(chan struct{})
	var writes atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method != http.MethodGet {
			writes.Add(1)
		}
		got <- r.Method + " " + r.URL.Path
		<-release // whether or not the client is still there, as the API does
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"name":"s1","admin_state":"maint"}`)
	}))
	defer ts.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	c, err := dataplaneapi.New(strings.Replace(ts.URL, "http://", "http://u:p@", 1), dataplaneapi.Options{APIVersion: "v2", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// A read in flight is given up at the cancel.
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := c.GetRuntimeServers(ctx, "b"); res <- err }()
	<-got
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("read on cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read in flight was not given up at the cancel")
	}

	// A write in flight is waited for.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	type answer struct {
		rs  *models.RuntimeServer
		err error
	}
	wres := make(chan answer, 1)
	go func() {
		rs, err := c.ReplaceRuntimeServer(ctx, "b", "s1", &models.RuntimeServer{AdminState: "maint"})
		wres <- answer{rs, err}
	}()
	if r := <-got; r != "PUT /v2/services/haproxy/runtime/servers/s1" {
		t.Fatalf("the API got %s", r)
	}
	cancel()
	// Bounded window, not a sleep: the call must not return before the
	// answer, however soon a cancel would end it.
	until := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(until) {
		select {
		case a := <-wres:
			t.Fatalf("returned (%v) before the API answered: the write was abandoned", a.err)
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	select {
	case a := <-wres:
		if a.err != nil || a.rs.AdminState != "maint" {
			t.Fatalf("the answered write: %+v, %v", a.rs, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no return after the API answered")
	}

	// ctx is done: the next write is not sent at all.
	if _, err := c.ReplaceRuntimeServer(ctx, "b", "s1", &models.RuntimeServer{AdminState: "ready"}); !errors.Is(err, context.Canceled) {
		t.Errorf("write on a canceled ctx: %v, want context.Canceled", err)
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("the API got %d writes, want 1", n)
	}
}
