// Command benchscale measures the controller at fleet scale on real
// components, all on loopback: a real etcd (the Debian binary, or the
// embedded server), a real HAProxy 2.6 in master-worker mode, and for the
// v2/v3 drivers the real Data Plane API behind a request-counting reverse
// proxy. It writes Patroni 3.0.2-shaped keys for N clusters x 3 members
// (nobody listens on the members' addresses: health checks fail), runs the
// built controller binary against them, and prints:
//
//   - initial convergence (controller ready; every backend live in HAProxy),
//   - one cluster's switchover: leader key moved -> live in the running
//     HAProxy (read over the stats socket, not from the file), and until the
//     write fence is lifted,
//   - a crash failover of every cluster at once -> live,
//   - Data Plane API requests per phase, per apply and per idle minute,
//   - HAProxy reloads (the master's counter) and old workers left (show proc),
//   - controller RSS and the CPU used by each process while idle.
//
// "Live" means: for every backend of the clusters concerned, the servers
// the running HAProxy has active (not MAINT, not DRAIN) are exactly those
// the plan wants, by address:port, with the wanted backup flags.
//
//	go run ./integration/cmd/benchscale -n 1000 -driver v2 -dataplaneapi-v2 ../shared/bin/dataplaneapi-2.9.9
//	make bench-scale N=1000 DRIVER=v3
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

type options struct {
	n             int
	driver        string
	dpapiV2       string
	dpapiV3       string
	haproxyBin    string
	etcdBin       string
	controllerBin string
	dir           string
	keep          bool
	idle          time.Duration
	gap           time.Duration
	sessions      bool
	layout        string
	timeout       time.Duration
	reloadDelay   int
	octet         int
	out           string
	label         string
	floor         bool
	count         bool
	followMass    bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("benchscale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.n, "n", 10, "clusters (3 members each, 4 services each)")
	fs.StringVar(&o.driver, "driver", "direct", "direct, v2 (Data Plane API 2.x) or v3 (Data Plane API 3.x)")
	fs.StringVar(&o.dpapiV2, "dataplaneapi-v2", os.Getenv("DATAPLANEAPI_BIN"), "Data Plane API 2.9.x binary (driver v2)")
	fs.StringVar(&o.dpapiV3, "dataplaneapi-v3", os.Getenv("DATAPLANEAPI_V3_BIN"), "Data Plane API 3.x binary (driver v3)")
	fs.StringVar(&o.haproxyBin, "haproxy", "haproxy", "HAProxy 2.6 binary")
	fs.StringVar(&o.etcdBin, "etcd", defaultEtcd(), `etcd binary, or "embed" for the in-process server`)
	fs.StringVar(&o.controllerBin, "controller", "bin/controller", "the controller binary (make build)")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a new temporary one, removed at the end unless -keep)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	fs.DurationVar(&o.idle, "idle", time.Minute, "how long to measure the idle fleet")
	fs.DurationVar(&o.gap, "switchover-gap", 500*time.Millisecond, "switchover: time between the old leader releasing the leader key and the new one taking it")
	fs.StringVar(&o.layout, "layout", "pigsty", "the targets' layout: pigsty, or twins (role changes at runtime, docs/twins.md)")
	fs.BoolVar(&o.sessions, "sessions", true, "make the switching cluster's members answer and hold a client session through each of its services across the switchover")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound of each phase")
	fs.IntVar(&o.reloadDelay, "reload-delay", 1, "the Data Plane API's reload_delay in seconds")
	fs.IntVar(&o.octet, "octet", 90, "addresses are 127.<octet>.x.y")
	fs.StringVar(&o.out, "out", "", "append the result as one markdown table row to this file")
	fs.StringVar(&o.label, "label", "", "free text for the row (commit, machine load)")
	fs.BoolVar(&o.count, "count-requests", true, "Data Plane API drivers: the controller talks to the API through a counting proxy in this process (request counts per phase); false: straight to the API, nothing counted (no proxy hop, nor its CPU, on the path measured)")
	fs.BoolVar(&o.followMass, "follow-mass", true, "mass failover: follow HAProxy with reads until live; false: read nothing until the controller logs an apply of role changes, then one full read that must find every backend live, and take that apply's end as live (an upper bound, without the follow reads' load on HAProxy and this process)")
	fs.BoolVar(&o.floor, "api-floor", true, "Data Plane API drivers: at the end, stop the controller and measure the API's own runtime GET and PUT rate on the fleet")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch o.driver {
	case "direct", "v2", "v3":
	default:
		fmt.Fprintf(stderr, "benchscale: -driver %q: want direct, v2 or v3\n", o.driver)
		return 2
	}
	if o.layout != "pigsty" && o.layout != "twins" {
		fmt.Fprintf(stderr, "benchscale: -layout %q: want pigsty or twins\n", o.layout)
		return 2
	}
	if o.n < 1 || o.n > 15000 {
		fmt.Fprintf(stderr, "benchscale: -n %d: want 1..15000\n", o.n)
		return 2
	}
	if o.octet < 1 || o.octet > 254 || o.octet == 0 {
		fmt.Fprintf(stderr, "benchscale: -octet %d: want 1..254 (not 0: the end-to-end suite uses 127.0.x)\n", o.octet)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, out: stdout, logw: stderr}
	res, err := b.run(ctx)
	b.teardown()
	if err != nil {
		fmt.Fprintf(stderr, "benchscale: %v\n", err)
		if b.dir != "" {
			fmt.Fprintf(stderr, "benchscale: logs in %s\n", b.dir)
		}
		return 1
	}
	res.print(stdout)
	if o.out != "" {
		if err := res.appendRow(o.out); err != nil {
			fmt.Fprintf(stderr, "benchscale: %v\n", err)
			return 1
		}
	}
	if !o.keep && o.dir == "" {
		_ = os.RemoveAll(b.dir)
	} else {
		fmt.Fprintf(stderr, "benchscale: work directory kept: %s\n", b.dir)
	}
	return 0
}

func defaultEtcd() string {
	for _, p := range []string{"/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return "embed"
}

func machine() string {
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil && len(b) > 0 {
		load = string(b[:min(len(b), 14)])
	}
	return fmt.Sprintf("%d CPUs, load %s", runtime.NumCPU(), trimSpace(load))
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\n') {
		s = s[:len(s)-1]
	}
	return s
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
