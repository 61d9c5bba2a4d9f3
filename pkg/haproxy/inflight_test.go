package haproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdingSocket is a stats socket that reads a whole request (up to quit in
// prompt mode, else one line), reports it on got, waits for release and
// then answers: an empty answer per command, as `set server` has.
func holdingSocket(t *testing.T) (path string, got chan string, release chan struct{}) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	got, release = make(chan string, 8), make(chan struct{})
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				first, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if first != "prompt\n" {
					got <- strings.TrimSpace(first)
					<-release
					return // one command: an empty answer, then close
				}
				var cmds []string
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "quit\n" {
						break
					}
					cmds = append(cmds, strings.TrimSpace(l))
				}
				got <- strings.Join(cmds, "; ")
				<-release
				_, _ = conn.Write([]byte("> " + strings.Repeat("\n> ", len(cmds))))
			}()
		}
	}()
	return path, got, release
}

// TestWriteCommandOutlivesCancel: a write command sent to HAProxy's socket
// is waited for until its answer when ctx is canceled (the controller
// stopping), since HAProxy carries it out anyway; one not sent yet is not
// sent; a show command is still given up at once.
func TestWriteCommandOutlivesCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(r *Runtime, ctx context.Context) error
		want string
	}{
		{"exec", func(r *Runtime, ctx context.Context) error { return r.SetState(ctx, "b", "s1", "maint") }, "set server b/s1 state maint"},
		{"pipeline", func(r *Runtime, ctx context.Context) error {
			return r.SetStates(ctx, []Flip{{Backend: "b", Server: "s1", State: "maint"}, {Backend: "b", Server: "s2", State: "ready"}})
		}, "set server b/s1 state maint; set server b/s2 state ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, got, release := holdingSocket(t)
			r := &Runtime{Socket: path, Timeout: 20 * time.Second}
			ctx, cancel := context.WithCancel(context.Background())
			res := make(chan error, 1)
			go func() { res <- tc.call(r, ctx) }()
			select {
			case cmd := <-got:
				if cmd != tc.want {
					t.Fatalf("HAProxy got %q, want %q", cmd, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the command did not reach the socket")
			}
			cancel()
			// Bounded window, not a sleep: the call must not return
			// before the answer, however soon a cancel would end it.
			until := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(until) {
				select {
				case err := <-res:
					t.Fatalf("returned (%v) before HAProxy answered: the write was abandoned", err)
				default:
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(release)
			select {
			case err := <-res:
				if err != nil {
					t.Fatalf("the answered write failed: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no return after HAProxy answered")
			}
			// ctx is done: the next write is not sent at all.
			if err := tc.call(r, ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("write on a canceled ctx: %v, want context.Canceled", err)
			}
			select {
			case cmd := <-got:
				t.Errorf("%q was sent on a canceled ctx", cmd)
			default:
			}
		})
	}

	t.Run("show", func(t *testing.T) {
		path, got, release := holdingSocket(t)
		defer close(release)
		r := &Runtime{Socket: path, Timeout: 20 * time.Second}
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() { _, err := r.Exec(ctx, "show info"); res <- err }()
		<-got
		cancel()
		select {
		case err := <-res:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("show on cancel: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read was not given up at the cancel")
		}
	})
}
