package haproxy

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// pigstyFleet is n clusters of 3 members with Pigsty's four services
// (primary, replica, default, offline) in Pigsty's layout, as a plan makes
// them: member 1 is the primary, the replica service has it as its backup
// (BackupIsPrimary), the offline service the replicas.
func pigstyFleet(n int) []services.Service {
	out := make([]services.Service, 0, 4*n)
	for c := 0; c < n; c++ {
		cl := fmt.Sprintf("pg-b%04d", c)
		var cands []services.Server
		for m := 1; m <= 3; m++ {
			cands = append(cands, services.Server{Name: fmt.Sprintf("%s-%d", cl, m), Address: fmt.Sprintf("10.%d.%d.%d", c/250, c%250, m),
				Port: 6432, CheckPort: 8008, Weight: 100, Selected: true, Reason: "selected by []"})
		}
		for k, name := range []string{"primary", "replica", "default", "offline"} {
			s := services.Service{Cluster: cl, Name: cl + "-" + name, Service: name, IP: "*", Port: 5433 + k,
				Check: []string{"/primary", "/read-only", "/primary", "/replica"}[k], Balance: "roundrobin", Maxconn: 5000,
				DefaultServer: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100",
				RoleDependent: name == "replica" || name == "offline", BackupIsPrimary: name == "replica"}
			switch name {
			case "primary", "default":
				s.Servers = []services.Server{cands[0], cands[1], cands[2]}
			case "replica":
				s.Candidates = cands
				s.Servers = []services.Server{cands[0], cands[1], cands[2]}
				s.Servers[0].Backup = true
			case "offline":
				s.Candidates = cands
				s.Servers = []services.Server{cands[1], cands[2]}
			}
			out = append(out, s)
		}
	}
	return out
}

// stateDumpOf is what `show servers state` of an HAProxy running desired
// answers (as after the runtime applies of a mass failover: every server
// at its desired address; the active ones UP, inactive twins in maint,
// trackers without a check of their own).
func stateDumpOf(desired []services.Service) string {
	var b strings.Builder
	b.WriteString("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n")
	for i, s := range desired {
		for j, sv := range s.Servers {
			op, admin, check := "2", "0", "15 3 4 6"
			if sv.Disabled {
				op, admin = "0", "5"
			}
			if sv.Track != "" {
				check = "15 3 4 0"
			}
			fmt.Fprintf(&b, "%d %s %d %s %s %s %s %d %d %d %s 0 0 0 - %d - 0 %d - - 0\n",
				2*i+3, s.Name, j+1, sv.Name, sv.Address, op, admin, sv.Weight, sv.Weight, 100+17*j+i%50, check, sv.Port, sv.CheckPort)
		}
	}
	return b.String()
}

// BenchmarkFixServersState1000: the server-state file of 1,000 clusters x 3
// members with Pigsty's four services, in the twin layout (18,000 servers:
// replica and offline twinned, default tracking primary, the replica's
// backup twins tracking the primary's servers) and in Pigsty's (12,000),
// fixed from a dump as a reload and the background refresh after a mass
// failover make it: "string" is FixServersState, "ref" the implementation
// it replaced (fixServersStateRef, for a comparison on the same machine),
// "file" what the refresh and the reload write to the temp file (through
// writeAtomicFunc's 64 KiB bufio.Writer, here to io.Discard).
func BenchmarkFixServersState1000(b *testing.B) {
	const n = 1000
	pigsty := pigstyFleet(n)
	twins, err := services.Twins(pigsty)
	if err != nil {
		b.Fatal(err)
	}
	for _, layout := range []struct {
		name    string
		desired []services.Service
	}{{"twins", twins}, {"pigsty", pigsty}} {
		dump := stateDumpOf(layout.desired)
		servers, trackers := 0, 0
		for _, s := range layout.desired {
			for _, sv := range s.Servers {
				servers++
				if sv.Track != "" {
					trackers++
				}
			}
		}
		b.Run(layout.name+"/string", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(dump)))
			for b.Loop() {
				if _, err := FixServersState(dump, layout.desired); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(servers), "servers")
			b.ReportMetric(float64(trackers), "trackers")
		})
		b.Run(layout.name+"/ref", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(dump)))
			for b.Loop() {
				if _, err := fixServersStateRef(dump, layout.desired); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(layout.name+"/file", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(dump)))
			for b.Loop() {
				bw := bufio.NewWriterSize(io.Discard, 64<<10)
				if err := writeFixedStateForBench(bw, dump, layout.desired); err != nil {
					b.Fatal(err)
				}
				if err := bw.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// writeFixedStateForBench is what the refresh and the reload write into
// the state file's temp file (before WriteFixedServersState: the string
// of FixServersState, copied into a []byte).
func writeFixedStateForBench(w io.Writer, dump string, desired []services.Service) error {
	return WriteFixedServersState(w, dump, desired)
}
