package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func init() {
	commands["plan"] = command{summary: "print the services each cluster should have, and why", run: runPlan}
}

// planInput are the flags plan and render share.
type planInput struct {
	inventory      string
	dcs            string
	includeUnknown bool
	pigstyVersion  string
}

func (in *planInput) register(flags *flag.FlagSet) {
	flags.StringVar(&in.inventory, "inventory", "", "Pigsty inventory YAML (required), e.g. config/pigsty.yml")
	flags.StringVar(&in.dcs, "dcs", "", "`SNAPSHOT` of Patroni's keys as etcdctl prints it (etcdctl get --prefix /pg/ -w json);\nwithout it the inventory roles are used")
	flags.BoolVar(&in.includeUnknown, "include-unknown", false, "serve members Patroni reports that the inventory lacks")
	in.pigstyVersion = topology.VersionAuto
	flags.Func("pigsty-version", "render health checks as Pigsty `auto|v3|v4` does (auto: from the inventory; see README, Pigsty versions)", func(v string) error {
		if !topology.ValidVersion(v) {
			return fmt.Errorf("want auto, v3 or v4")
		}
		in.pigstyVersion = v
		return nil
	})
}

// compute loads the inventory and the optional DCS snapshot and plans.
func (in *planInput) compute() (*plan.Plan, *topology.Inventory, error) {
	inv, err := plan.LoadInventory(in.inventory, topology.ParseOptions{PigstyVersion: in.pigstyVersion})
	if err != nil {
		return nil, nil, err
	}
	var dcs map[string]*patroni.ClusterState
	if in.dcs != "" {
		kvs, _, err := patroni.LoadSnapshot(in.dcs)
		if err != nil {
			return nil, nil, err
		}
		dcs = decodePerNamespace(inv, kvs)
	}
	p, err := plan.Compute(inv, dcs, plan.Options{IncludeUnknown: in.includeUnknown})
	if err != nil {
		return nil, nil, err
	}
	return p, inv, nil
}

// decodePerNamespace decodes the snapshot once per distinct pg_namespace and
// keeps, for every cluster, the state of its own scope in its own namespace.
func decodePerNamespace(inv *topology.Inventory, kvs []patroni.KV) map[string]*patroni.ClusterState {
	dcs, _ := statesByCluster(inv, func(ns string) (map[string]*patroni.ClusterState, error) {
		return patroni.Decode(ns, kvs), nil
	})
	return dcs
}

// statesByCluster reads each distinct pg_namespace of inv once with list
// (its states keyed as patroni.Decode keys them) and returns, keyed by
// cluster name as plan.Compute looks them up, the state of every cluster's
// own scope in its own namespace: a Citus group's key is
// "<pg_shard>/<pg_group>" (Cluster.DCSKey), not its pg_cluster, and one
// scope in two namespaces is two clusters.
func statesByCluster(inv *topology.Inventory, list func(ns string) (map[string]*patroni.ClusterState, error)) (map[string]*patroni.ClusterState, error) {
	byNS := map[string]map[string]*patroni.ClusterState{}
	dcs := make(map[string]*patroni.ClusterState, len(inv.Clusters))
	for _, c := range inv.Clusters {
		decoded, ok := byNS[c.Namespace]
		if !ok {
			var err error
			if decoded, err = list(c.Namespace); err != nil {
				return nil, err
			}
			byNS[c.Namespace] = decoded
		}
		if st := decoded[c.DCSKey]; st != nil {
			dcs[c.Name] = st
		}
	}
	return dcs, nil
}

func runPlan(args []string, stdout, stderr io.Writer) int {
	var in planInput
	var format string
	flags := flag.NewFlagSet("plan", flag.ContinueOnError)
	flags.SetOutput(stderr)
	in.register(flags)
	flags.StringVar(&format, "format", "text", "output format: text or json")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: controller plan --inventory FILE [--dcs SNAPSHOT] [--format text|json] [--include-unknown]")
		fmt.Fprintln(flags.Output(), "\nPrints every cluster's merged members and desired services (servers, backup flags, reasons).")
		flags.PrintDefaults()
	}
	if code, done := parseSubFlags(flags, args, stderr); done {
		return code
	}
	if in.inventory == "" {
		return subUsageError(flags, stderr, "--inventory is required")
	}
	if format != "text" && format != "json" {
		return subUsageError(flags, stderr, fmt.Sprintf("--format %q: want text or json", format))
	}
	p, _, err := in.compute()
	if err != nil {
		return exitWithError(stderr, err)
	}
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(p)
	} else {
		err = p.WriteText(stdout)
	}
	if err != nil {
		return exitWithError(stderr, fmt.Errorf("write output: %w", err))
	}
	return 0
}

// parseSubFlags parses args; done is true when the command must stop with code
// (0 for -h, 2 for a flag error, which the flag package already printed).
func parseSubFlags(flags *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	err := flags.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, true
	case err != nil:
		return 2, true
	case flags.NArg() > 0:
		return subUsageError(flags, stderr, fmt.Sprintf("unexpected argument %q", flags.Arg(0))), true
	}
	return 0, false
}

func subUsageError(flags *flag.FlagSet, stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "controller %s: %s\n", flags.Name(), msg)
	fmt.Fprintf(stderr, "run 'controller %s -h' for usage\n", flags.Name())
	return 2
}

// exitWithError prints err as ONE line, "controller: <file>: <field...>: <msg>", and
// returns exit code 1. Loaders report every problem they find (joined); the
// first is printed, with a count of the others.
func exitWithError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "controller: %s\n", oneLineError(err))
	return 1
}

func oneLineError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// "read inventory: open x.yml: no such file" -> "x.yml: cannot open: no such file".
		return fmt.Sprintf("%s: cannot %s: %v", pe.Path, pe.Op, pe.Err)
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	msg := strings.Join(strings.Fields(lines[0]), " ")
	if n := len(lines) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return msg
}
