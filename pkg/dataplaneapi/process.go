package dataplaneapi

import "github.com/pgsvc/pgsvc/pkg/haproxyproc"

// The API's runtime socket answers GET /runtime/info with the worker's pid
// and uptime: a HAProxy process is its pid and its start time
// (haproxyproc.Table), as a container's HAProxy has the same pid on every
// start. The driver's caches of what runs (the admin states, the forced
// health records, the services in sync) hold the table's ids, as int64,
// where they say "pid"; 0 is unknown.
type procTable = haproxyproc.Table

// procPID is the pid of the process id names.
func procPID(id int64) int64 { return int64(haproxyproc.ID(id).PID()) }

// procName names the process id for a log line: "worker 7 (process #3)".
func procName(id int64) string { return haproxyproc.ID(id).String() }
