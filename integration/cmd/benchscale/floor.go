package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// floor is what the Data Plane API alone does with the fleet's HAProxy, the
// controller stopped and the benchmark reading nothing else: the floor under
// a mass failover through the API (every runtime request is HAProxy CLI
// commands: a GET one, a PUT three, its state read before and after).
type floor struct {
	gets, puts       int
	getTook, putTook time.Duration
	getCPU, putCPU   cpuTimes
	errors           int
	example          string
}

// floorPuts: the PUTs of the floor, about a 1,000-cluster mass failover's
// admin-state flips and forced health.
const floorPuts = 6000

// floorParallel: requests in flight, as the driver sends them (flipParallel).
const floorParallel = 8

// runtimeServer is the part of a runtime server answer the floor reads.
type runtimeServer struct {
	Name       string `json:"name"`
	AdminState string `json:"admin_state"`
}

// apiFloor stops the controller, then GETs the runtime servers of every
// cluster's replica and offline backend, then PUTs up to floorPuts of those
// servers (not the tracking twins) to the other admin state (ready <-> drain; maint -> ready), each
// floorParallel in flight, straight to the API (not through the counter).
// The fleet's roles are wrong afterwards: it runs last. A request that
// fails is counted and named in the row, not fatal.
func (b *bench) apiFloor(ctx context.Context) *floor {
	b.controller.stop()
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * floorParallel}, Timeout: 30 * time.Second}
	defer cl.CloseIdleConnections()
	ver := b.o.driver
	var backends []string
	for i := 0; i < b.o.n; i++ {
		c := b.fleet.clusterName(i)
		backends = append(backends, c+"-replica", c+"-offline")
	}
	f := &floor{}
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		f.errors++
		if f.example == "" {
			f.example = err.Error()
		}
	}
	type put struct{ backend, server, state string }
	var puts []put
	c0 := b.cpu(ctx)
	t0 := time.Now()
	each(len(backends), func(i int) {
		u := fmt.Sprintf("%s/%s/services/haproxy/runtime/backends/%s/servers", b.apiURL, ver, url.PathEscape(backends[i]))
		if ver == "v2" {
			u = fmt.Sprintf("%s/v2/services/haproxy/runtime/servers?backend=%s", b.apiURL, url.QueryEscape(backends[i]))
		}
		var got []runtimeServer
		if err := apiDo(ctx, cl, http.MethodGet, u, nil, &got); err != nil {
			fail(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, s := range got {
			if allTrackers[backends[i]+"/"+s.Name] {
				// A tracker readied answers the maint or drain of the
				// server it tracks: no flip the controller makes.
				continue
			}
			state := "ready"
			if s.AdminState == "ready" {
				state = "drain"
			}
			puts = append(puts, put{backends[i], s.Name, state})
		}
	})
	f.gets, f.getTook = len(backends), time.Since(t0)
	c1 := b.cpu(ctx)
	f.getCPU = c1.minus(c0)
	if len(puts) > floorPuts {
		puts = puts[:floorPuts]
	}
	t1 := time.Now()
	each(len(puts), func(i int) {
		p := puts[i]
		u := fmt.Sprintf("%s/%s/services/haproxy/runtime/backends/%s/servers/%s", b.apiURL, ver, url.PathEscape(p.backend), url.PathEscape(p.server))
		if ver == "v2" {
			u = fmt.Sprintf("%s/v2/services/haproxy/runtime/servers/%s?backend=%s", b.apiURL, url.PathEscape(p.server), url.QueryEscape(p.backend))
		}
		var got runtimeServer
		if err := apiDo(ctx, cl, http.MethodPut, u, map[string]string{"admin_state": p.state}, &got); err != nil {
			fail(err)
			return
		}
		// drain on a server disabled in the file answers maint (both
		// inactive: docs/twins.md).
		if (got.AdminState == "ready") != (p.state == "ready") {
			fail(fmt.Errorf("PUT %s/%s admin_state %s: answered %q", p.backend, p.server, p.state, got.AdminState))
		}
	})
	f.puts, f.putTook = len(puts), time.Since(t1)
	f.putCPU = b.cpu(ctx).minus(c1)
	return f
}

// each runs fn(0..n-1), floorParallel at a time.
func each(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < floorParallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// apiDo sends one request with the bench's credentials and decodes a 2xx
// answer into out.
func apiDo(ctx context.Context, cl *http.Client, method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth("admin", "adminpwd")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, out)
}

// minus is the CPU used between two readings.
func (c cpuTimes) minus(before cpuTimes) cpuTimes {
	return cpuTimes{ctl: c.ctl - before.ctl, api: c.api - before.api, hap: max(c.hap-before.hap, 0), self: c.self - before.self}
}

// String is the floor's row.
func (f *floor) String() string {
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	s := fmt.Sprintf("%d runtime GETs (a backend's servers each) %s, %.0f a second (CPU API / HAProxy %.1f / %.1f s); %d runtime PUTs (an admin state each) %s, %.0f a second (CPU API / HAProxy %.1f / %.1f s); %d in flight",
		f.gets, ms(f.getTook), rate(f.gets, f.getTook), f.getCPU.api.Seconds(), f.getCPU.hap.Seconds(),
		f.puts, ms(f.putTook), rate(f.puts, f.putTook), f.putCPU.api.Seconds(), f.putCPU.hap.Seconds(), floorParallel)
	if f.errors > 0 {
		s += fmt.Sprintf("; **%d errors** (%s)", f.errors, f.example)
	}
	return s
}
