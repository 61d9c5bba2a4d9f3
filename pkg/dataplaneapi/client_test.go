package dataplaneapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

func TestNewCredentials(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("filepw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		url      string
		opts     dataplaneapi.Options
		env      string
		wantUser string
		wantPw   string
		wantErr  string
	}{
		{name: "userinfo", url: "http://admin:secret@127.0.0.1:5555", wantUser: "admin", wantPw: "secret"},
		{name: "options win", url: "http://admin:secret@127.0.0.1:5555", opts: dataplaneapi.Options{Username: "ops", Password: "optpw"}, wantUser: "ops", wantPw: "optpw"},
		{name: "password file", url: "http://admin@127.0.0.1:5555", opts: dataplaneapi.Options{PasswordFile: pwFile}, wantUser: "admin", wantPw: "filepw"},
		{name: "env", url: "http://admin@127.0.0.1:5555", env: "envpw", wantUser: "admin", wantPw: "envpw"},
		{name: "no user", url: "http://127.0.0.1:5555", wantErr: "no user"},
		{name: "bad scheme", url: "ftp://a:b@127.0.0.1", wantErr: "scheme"},
		{name: "missing password file", url: "http://a@127.0.0.1", opts: dataplaneapi.Options{PasswordFile: filepath.Join(dir, "nope")}, wantErr: "password file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(dataplaneapi.PasswordEnv, tc.env)
			var gotUser, gotPw string
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotUser, gotPw, _ = r.BasicAuth()
				fmt.Fprint(w, "7")
			}))
			defer ts.Close()
			u := strings.Replace(tc.url, "127.0.0.1:5555", strings.TrimPrefix(ts.URL, "http://"), 1)
			c, err := dataplaneapi.New(u, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), ":b@") {
					t.Fatalf("error leaks a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(c.Name(), tc.wantPw) || strings.Contains(c.String(), tc.wantPw) {
				t.Errorf("Name %q shows the password", c.Name())
			}
			v, err := c.GetVersion(context.Background())
			if err != nil || v != 7 {
				t.Fatalf("version %d, %v", v, err)
			}
			if gotUser != tc.wantUser || gotPw != tc.wantPw {
				t.Errorf("basic auth %s:%s, want %s:%s", gotUser, gotPw, tc.wantUser, tc.wantPw)
			}
		})
	}
}

func TestHeadersMatchedCaseInsensitively(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Set raw (non-canonical) keys, as some proxies forward them.
		w.Header()["reload-id"] = []string{"2026-11-26-4"}
		w.Header()["configuration-version"] = []string{"12"}
		w.WriteHeader(202)
		fmt.Fprint(w, `{"_version":11,"id":"x","status":"success"}`)
	}))
	defer ts.Close()
	c, err := dataplaneapi.New(strings.Replace(ts.URL, "http://", "http://u:p@", 1), dataplaneapi.Options{APIVersion: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := c.CommitTransaction(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if m.ReloadID != "2026-11-26-4" || m.Version != 12 || !m.Reloaded() {
		t.Fatalf("meta %+v", m)
	}
}

func TestAPIErrors(t *testing.T) {
	srv := dpapitest.NewServer(t)
	c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.StartTransaction(ctx, 99)
	var ae *dataplaneapi.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != 409 || !strings.Contains(ae.Message, "version mismatch") ||
		ae.Method != "POST" || ae.Path != "/transactions" || !dataplaneapi.IsConflict(err) {
		t.Fatalf("stale start: %#v", err)
	}
	_, _, err = c.GetServer(ctx, "nope", "x")
	if !dataplaneapi.IsNotFound(err) || dataplaneapi.Retryable(err) {
		t.Fatalf("missing server: %v", err)
	}
	// Neither version nor transaction: refused before any call.
	if _, err := c.DeleteServer(ctx, "b", "s", dataplaneapi.Write{}); err == nil {
		t.Fatal("write without version accepted")
	}
	if _, err := c.DeleteServer(ctx, "b", "s", dataplaneapi.Write{Version: 1, TransactionID: "t"}); err == nil {
		t.Fatal("write with both accepted")
	}
	bad, _ := dataplaneapi.New(strings.Replace(srv.URL(), "adminpwd", "wrong", 1), dataplaneapi.Options{})
	if _, err := bad.GetVersion(ctx); statusOf(err) != 401 || dataplaneapi.Retryable(err) {
		t.Fatalf("bad password: %v", err)
	}
}

func statusOf(err error) int {
	var ae *dataplaneapi.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestRetryable(t *testing.T) {
	api := func(status int) error { return &dataplaneapi.APIError{Status: status} }
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", api(500), true},
		{"503", api(503), true},
		{"429", api(429), true},
		{"409", api(409), true},
		{"406", api(406), true},
		{"400", api(400), false},
		{"401", api(401), false},
		{"403", api(403), false},
		{"404", api(404), false},
		{"wrapped 503", fmt.Errorf("apply: %w", api(503)), true},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{"timeout", context.DeadlineExceeded, true},
		{"cancelled", context.Canceled, false},
		{"reload failed", fmt.Errorf("x: %w", dataplaneapi.ErrReloadFailed), true},
		{"plain", errors.New("bad input"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := dataplaneapi.Retryable(tc.err); got != tc.want {
				t.Fatalf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestClientCallTimeout(t *testing.T) {
	block := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(block)
	c, _ := dataplaneapi.New(strings.Replace(ts.URL, "http://", "http://u:p@", 1), dataplaneapi.Options{Timeout: 50 * time.Millisecond})
	start := time.Now()
	_, err := c.GetVersion(context.Background())
	if err == nil || !dataplaneapi.Retryable(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestRuntimeServerCalls(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(dpapitest.EmptyConfig+"\nbackend b\n    mode tcp\n    server s1 127.0.0.1:5432 check\n"))
	c, _ := dataplaneapi.New(srv.URL(), dataplaneapi.Options{})
	ctx := context.Background()
	rs, err := c.ReplaceRuntimeServer(ctx, "b", "s1", &models.RuntimeServer{AdminState: "maint"})
	if err != nil || rs.AdminState != "maint" || rs.OperationalState != "down" {
		t.Fatalf("maint: %+v %v", rs, err)
	}
	list, err := c.GetRuntimeServers(ctx, "b")
	if err != nil || len(list) != 1 || list[0].AdminState != "maint" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if _, err := c.ReplaceRuntimeServer(ctx, "b", "nope", &models.RuntimeServer{AdminState: "ready"}); statusOf(err) != 500 || !dataplaneapi.Retryable(err) {
		t.Fatalf("unknown server: %v", err)
	}
}
