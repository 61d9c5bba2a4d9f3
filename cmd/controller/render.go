package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
)

func init() {
	commands["render"] = command{summary: "print a complete haproxy.cfg for the planned services", run: runRender}
}

// Default paths of a rendered haproxy.cfg: the admin socket where Debian's
// haproxy package puts it, and the server-state file in HAProxy's own state
// directory (the reload script dumps `show servers state` into it).
const (
	defaultStatsSocket     = "/run/haproxy/admin.sock"
	defaultServerStateFile = "/var/lib/haproxy/server-state"
)

func runRender(args []string, stdout, stderr io.Writer) int {
	var in planInput
	var opts haproxycfg.Options
	var clusters, host, layout string
	flags := flag.NewFlagSet("render", flag.ContinueOnError)
	flags.SetOutput(stderr)
	in.register(flags)
	flags.StringVar(&opts.StatsSocket, "stats-socket", defaultStatsSocket, "admin stats socket in global (the Data Plane API needs one); \"\" for none")
	flags.StringVar(&opts.ServerStateFile, "server-state-file", defaultServerStateFile,
		"server-state-file in global, loaded at reload so servers keep their\nhealth state instead of restarting UP 1/3 INI; \"\" for none")
	flags.IntVar(&opts.Maxconn, "maxconn", haproxycfg.DefaultMaxconn, "global maxconn")
	flags.BoolVar(&opts.NoStrictLimits, "no-strict-limits", false, "let HAProxy start when it cannot raise its file limit for maxconn")
	flags.StringVar(&clusters, "cluster", "", "render only these clusters (comma-separated); services of clusters\nsharing one HAProxy must not bind the same port")
	flags.StringVar(&host, "host", "", "render the haproxy.cfg of this inventory node: the clusters Pigsty places\non it (its own cluster, or those delegating to its pg_service_provider group)")
	flags.StringVar(&layout, "layout", "pigsty", "pigsty: Pigsty's view (the servers the selectors choose); twins: the file a\ntarget with layout: twins writes (every member twice in role-dependent\nservices, inactive twins disabled)")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: controller render --inventory FILE [--dcs SNAPSHOT] [--host IP] [--cluster a,b] [--stats-socket P] [--server-state-file P]")
		fmt.Fprintln(flags.Output(), "\nPrints a complete haproxy.cfg (frontend+backend pairs the Data Plane API can manage).")
		fmt.Fprintf(flags.Output(), "Defaults: stats socket %s, server-state file %s.\n\n", defaultStatsSocket, defaultServerStateFile)
		flags.PrintDefaults()
	}
	if code, done := parseSubFlags(flags, args, stderr); done {
		return code
	}
	if in.inventory == "" {
		return subUsageError(flags, stderr, "--inventory is required")
	}
	if layout != "pigsty" && layout != "twins" {
		return subUsageError(flags, stderr, fmt.Sprintf("--layout %s: want pigsty or twins", layout))
	}
	if opts.Maxconn < 1 {
		return subUsageError(flags, stderr, fmt.Sprintf("--maxconn %d: want a positive number", opts.Maxconn))
	}
	p, inv, err := in.compute()
	if err != nil {
		return exitWithError(stderr, err)
	}
	want := map[string]bool{}
	for _, name := range strings.Split(clusters, ",") {
		if name = strings.TrimSpace(name); name != "" {
			if inv.Cluster(name) == nil {
				return exitWithError(stderr, fmt.Errorf("%s: --cluster %s: no such cluster in the inventory", inv.File, name))
			}
			want[name] = true
		}
	}
	files, warnings, err := renderFiles(p, inv, want, strings.TrimSpace(host))
	for _, w := range warnings {
		fmt.Fprintf(stderr, "controller: warning: %s\n", w)
	}
	if err != nil {
		return exitWithError(stderr, err)
	}
	for i, f := range files {
		var out []byte
		if len(files) > 1 {
			if i > 0 {
				out = append(out, '\n')
			}
			out = append(out, f.header(i, len(files))...)
		}
		svcs := f.svcs
		if layout == "twins" {
			if svcs, err = services.Twins(svcs); err != nil {
				return exitWithError(stderr, err)
			}
		}
		out = append(out, haproxycfg.Render(svcs, opts)...)
		if _, err := stdout.Write(out); err != nil {
			return exitWithError(stderr, fmt.Errorf("write output: %w", err))
		}
	}
	return 0
}
