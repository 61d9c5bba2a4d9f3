// Command democluster starts, inspects and stops the real loopback Patroni
// stack that `make demo` uses (etcd, Patroni + PostgreSQL 15, pgbouncer; no
// HAProxy). `up` returns while the processes keep running; their PIDs go to
// a state file that `down` and `status` read.
//
//	go run ./integration/cmd/democluster up [-dir /var/tmp/pgsvc-demo] [-duo=true]
//	go run ./integration/cmd/democluster status
//	go run ./integration/cmd/democluster down
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/integration/harness"
)

const defaultDir = "/var/tmp/pgsvc-demo"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: democluster up|down|status [-dir DIR] (run 'democluster up -h' for flags)")
		return 2
	}
	fs := flag.NewFlagSet("democluster "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultDir, "base directory for data, configs, logs and the state file")
	duo := fs.Bool("duo", true, "up: also start the two-member cluster pg-duo on 127.0.0.21-22")
	ttl := fs.Int("ttl", 0, "up: Patroni ttl in seconds (0 = Patroni default 30)")
	loopWait := fs.Int("loop-wait", 0, "up: Patroni loop_wait in seconds (0 = default 10)")
	retry := fs.Int("retry-timeout", 0, "up: Patroni retry_timeout in seconds (0 = default 10)")
	jsonOut := fs.Bool("json", false, "status: print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	logger, err := zap.NewDevelopment()
	if err != nil {
		fmt.Fprintf(stderr, "democluster: logger: %v\n", err)
		return 1
	}
	defer func() { _ = logger.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	statePath := filepath.Join(*dir, "state.json")
	inventory := filepath.Join(*dir, "inventory.yml")
	switch args[0] {
	case "up":
		clusters := []harness.ClusterSpec{harness.TestCluster()}
		if *duo {
			clusters = append(clusters, harness.DuoCluster())
		}
		for i := range clusters {
			clusters[i].TTL, clusters[i].LoopWait, clusters[i].RetryTimeout = *ttl, *loopWait, *retry
		}
		err = up(ctx, *dir, statePath, inventory, clusters, logger, stdout)
	case "down":
		err = down(statePath, logger, stdout)
	case "status":
		err = status(ctx, statePath, logger, stdout, *jsonOut)
	default:
		fmt.Fprintf(stderr, "democluster: unknown command %q (want up, down or status)\n", args[0])
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "democluster %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func up(ctx context.Context, dir, statePath, inventory string, clusters []harness.ClusterSpec, log *zap.Logger, out io.Writer) error {
	if env, err := harness.Attach(statePath, log); err == nil {
		if ps := env.Processes(); len(ps) > 0 {
			return fmt.Errorf("already up (%d processes of %s alive): run 'democluster down' first", len(ps), statePath)
		}
	}
	// A previous run's leftovers: only ever removes a directory the harness
	// created itself.
	if err := harness.RemoveBaseDir(dir); err != nil {
		return err
	}
	env, err := harness.Start(ctx, harness.Config{BaseDir: dir, Clusters: clusters}, log)
	if err != nil {
		return err
	}
	if err := env.WriteState(statePath); err != nil {
		return errors.Join(err, env.Stop())
	}
	if err := env.WriteInventory(inventory); err != nil {
		return err
	}
	fmt.Fprintf(out, "state:     %s\ninventory: %s\netcd:      %v\n\n", statePath, inventory, env.EtcdEndpoints())
	printTable(out, env.Status(ctx))
	return nil
}

func down(statePath string, log *zap.Logger, out io.Writer) error {
	env, err := harness.Attach(statePath, log)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(out, "not up (no state file)")
		return nil
	}
	if err != nil {
		return err
	}
	if err := env.Stop(); err != nil {
		return err
	}
	if left := env.Processes(); len(left) > 0 {
		return fmt.Errorf("still running after stop: %v", left)
	}
	fmt.Fprintln(out, "stopped")
	return nil
}

func status(ctx context.Context, statePath string, log *zap.Logger, out io.Writer, asJSON bool) error {
	env, err := harness.Attach(statePath, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st := env.Status(ctx)
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	for _, cl := range env.Config().Clusters {
		l, err := env.Leader(ctx, cl.Name)
		if err != nil {
			l = "? (" + err.Error() + ")"
		}
		fmt.Fprintf(out, "%s leader key: %s\n", cl.Name, l)
	}
	fmt.Fprintln(out)
	printTable(out, st)
	return nil
}

func printTable(out io.Writer, st []harness.MemberStatus) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tMEMBER\tADDR\tROLE\tSTATE\tTL\tPATRONI\tPGBOUNCER")
	for _, s := range st {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Cluster, s.Name, s.Addr, dash(s.Role), dash(s.State),
			s.Timeline, pid(s.PatroniPID, s.PatroniUp), pid(s.PgbouncerPID, s.PgbouncerUp))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pid(p int, up bool) string {
	if !up {
		return fmt.Sprintf("%d (down)", p)
	}
	return fmt.Sprint(p)
}
