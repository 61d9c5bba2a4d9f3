package dataplaneapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
)

// On v3 a whole-object PUT built on a GET keeps the fields only v6 knows.
func TestV3ReplaceKeepsFieldsOnlyV6Knows(t *testing.T) {
	var mu sync.Mutex
	var put map[string]any
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Configuration-Version", "7")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET" && r.URL.Path == "/v3/services/haproxy/configuration/backends/b/servers/s":
			io.WriteString(w, `{"name":"s","address":"10.0.0.1","port":5432,"check":"enabled","weight":5,"maxconn":10,"guid":"g-1","sslv3":"disabled","init-state":"down"}`)
		case r.Method == "PUT" && r.URL.Path == "/v3/services/haproxy/configuration/backends/b/servers/s":
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			_ = json.Unmarshal(b, &put)
			mu.Unlock()
			w.Write(b)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"code":404,"message":"not found"}`)
		}
	}))
	defer ts.Close()
	c, err := dataplaneapi.New(strings.Replace(ts.URL, "http://", "http://u:p@", 1), dataplaneapi.Options{APIVersion: "v3"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, _, err := c.GetServer(ctx, "b", "s")
	if err != nil {
		t.Fatal(err)
	}
	w := int64(100)
	s.Weight, s.Maxconn, s.Backup = &w, nil, "enabled"
	if _, err := c.ReplaceServer(ctx, "b", s, dataplaneapi.AtVersion(7)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if put["guid"] != "g-1" || put["sslv3"] != "disabled" || put["init-state"] != "down" {
		t.Errorf("v6-only fields lost: %v", put)
	}
	if put["weight"] != float64(100) || put["backup"] != "enabled" || put["address"] != "10.0.0.1" {
		t.Errorf("managed fields not sent: %v", put)
	}
	if _, ok := put["maxconn"]; ok {
		t.Errorf("a field the model removed is still sent: %v", put)
	}
}
