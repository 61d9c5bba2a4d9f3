package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/app"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func init() {
	commands["diff"] = command{summary: "compare each live HAProxy with what the controller would set now (exit 2 on drift)", run: runDiff}
}

// runDiff reads etcd once and every target, prints the changes the
// controller would make, and exits 0 (no drift), 2 (drift) or 1 (error).
func runDiff(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	log := zap.NewNop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inv, err := plan.LoadInventory(cfg.Inventory, topology.ParseOptions{PigstyVersion: cfg.PigstyVersion})
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	desired, warnings, err := desiredNow(ctx, cfg, inv)
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	// What the plan warns about (a cluster without a leader key planned
	// from its inventory roles, bad DCS keys skipped): a drift it causes
	// may be one the running controller, which remembers the last known
	// leader, would not make.
	for _, w := range warnings {
		fmt.Fprintf(stderr, "controller: warning: %s\n", w)
	}
	targets, err := app.BuildTargets(cfg, inv, log)
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	drift, failed := false, false
	for _, t := range targets {
		changes, err := t.Diff(ctx, desired)
		if err != nil {
			fmt.Fprintf(stdout, "%s: ERROR %v\n", t.Name(), err)
			failed = true
			continue
		}
		if len(changes) == 0 {
			fmt.Fprintf(stdout, "%s: in sync\n", t.Name())
			continue
		}
		drift = true
		fmt.Fprintf(stdout, "%s: %d change(s)\n", t.Name(), len(changes))
		for _, c := range changes {
			where := c.Backend
			if c.Server != "" {
				where += "/" + c.Server
			}
			runtime := ""
			if c.Runtime {
				runtime = " (runtime, no reload)"
			}
			fmt.Fprintf(stdout, "  %-15s %-30s %s%s\n", c.Kind, where, c.Detail, runtime)
		}
	}
	switch {
	case failed:
		return 1
	case drift:
		return 2
	}
	return 0
}

// desiredNow lists every namespace once and computes the plan's services
// and warnings ("cluster: warning"). Clusters without a leader key keep
// their inventory roles here (a one-shot diff has no last known leader)
// and are reported in the warnings.
func desiredNow(ctx context.Context, cfg *config.Config, inv *topology.Inventory) ([]services.Service, []string, error) {
	password, err := cfg.Etcd.EtcdPassword()
	if err != nil {
		return nil, nil, err
	}
	cli, err := patroni.NewClient(patroni.ClientConfig{
		Endpoints: cfg.Etcd.Endpoints, CACert: cfg.Etcd.CAFile, Cert: cfg.Etcd.CertFile, Key: cfg.Etcd.KeyFile,
		Username: cfg.Etcd.Username, Password: password, DialTimeout: cfg.Etcd.DialTimeout.Duration,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	return desiredFrom(inv, func(ns string) (map[string]*patroni.ClusterState, error) {
		states, _, err := patroni.List(ctx, cli, ns)
		if err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
		return states, nil
	}, cfg.IncludeUnknown)
}

// desiredFrom reads each namespace of inv once with list (decoded states
// keyed as patroni.Decode keys them) and computes the plan's services and
// warnings ("cluster: warning").
func desiredFrom(inv *topology.Inventory, list func(ns string) (map[string]*patroni.ClusterState, error), includeUnknown bool) ([]services.Service, []string, error) {
	dcs, err := statesByCluster(inv, list)
	if err != nil {
		return nil, nil, err
	}
	p, err := plan.Compute(inv, dcs, plan.Options{IncludeUnknown: includeUnknown})
	if err != nil {
		return nil, nil, err
	}
	var out []services.Service
	var warnings []string
	for _, cl := range p.Clusters {
		out = append(out, cl.Services...)
		for _, w := range cl.Warnings {
			warnings = append(warnings, cl.Name+": "+w)
		}
	}
	return out, warnings, nil
}
