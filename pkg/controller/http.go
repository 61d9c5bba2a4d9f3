package controller

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Handler serves GET /status (JSON), /healthz (the process is alive) and
// /readyz (200 only with a fresh DCS view and every target in sync). extra
// handlers (e.g. "/metrics") are mounted as given.
func (c *Controller) Handler(extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		// ?cluster=a&cluster=b or ?cluster=a,b: only those clusters (see
		// StatusOf); 404 naming any the plan does not have.
		var st Status
		if names := clusterParam(r); len(names) > 0 {
			var err error
			if st, err = c.StatusOf(names); err != nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
				return
			}
		} else {
			st = c.Status()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = writeStatus(w, st)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if f := c.Failed(); f != "" {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("unhealthy: " + f + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		st := c.status(false)
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": st.Ready, "not_ready": st.NotReady})
	})
	for path, h := range extra {
		mux.Handle(path, h)
	}
	return mux
}

// clusterParam is the cluster names of a /status request's cluster
// parameters, each a name or a comma-separated list.
func clusterParam(r *http.Request) []string {
	var out []string
	for _, v := range r.URL.Query()["cluster"] {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				out = append(out, n)
			}
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeStatus writes st as writeJSON does (indented by two spaces), the
// clusters one at a time: at 1,000 clusters the document is ~8 MB, and
// encoding it whole (then indenting it: two buffers, each grown by
// doubling) took ~60 MB for each /status and left the controller's RSS
// there until the memory went back to the OS (103 -> 166 MB, measured):
// a monitor polling /status, or an operator's `controller status`, kept
// the controller ~60 MB above its idle size. Now what it holds at once is
// one cluster's JSON and the rest of the document (targets, history).
func writeStatus(w io.Writer, st Status) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	fields := []struct {
		key  string
		v    any
		omit bool
	}{
		{"now", st.Now, false},
		{"ready", st.Ready, false},
		{"not_ready", st.NotReady, len(st.NotReady) == 0},
		{"dry_run", st.DryRun, !st.DryRun},
		{"controller_leader", st.Leader, st.Leader == nil},
		{"transitions_in_flight", st.TransitionsInFlight, false},
		{"inventory", st.Inventory, false},
		{"dcs", st.DCS, false},
		{"clusters", nil, false}, // streamed
		{"targets", st.Targets, false},
		{"history", st.History, false},
	}
	sep := "{"
	for _, f := range fields {
		if f.omit {
			continue
		}
		_, _ = bw.WriteString(sep + "\n  \"" + f.key + "\": ")
		sep = ","
		if f.key == "clusters" {
			if err := writeClusters(bw, st.Clusters); err != nil {
				return err
			}
			continue
		}
		b, err := json.MarshalIndent(f.v, "  ", "  ")
		if err != nil {
			return err
		}
		_, _ = bw.Write(b)
	}
	_, _ = bw.WriteString("\n}\n")
	return bw.Flush()
}

// writeClusters writes the clusters array of writeStatus, one element at
// a time.
func writeClusters(bw *bufio.Writer, clusters []ClusterStatus) error {
	switch {
	case clusters == nil:
		_, err := bw.WriteString("null")
		return err
	case len(clusters) == 0:
		_, err := bw.WriteString("[]")
		return err
	}
	// One encoder and buffer for all: its indenting buffer and the
	// buffer are reused (MarshalIndent of each made 16 MB of garbage per
	// /status at 1,000 clusters).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("    ", "  ")
	sep := "["
	for i := range clusters {
		buf.Reset()
		if err := enc.Encode(&clusters[i]); err != nil {
			return err
		}
		_, _ = bw.WriteString(sep + "\n    ")
		_, _ = bw.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
		sep = ","
	}
	_, err := bw.WriteString("\n  ]")
	return err
}
