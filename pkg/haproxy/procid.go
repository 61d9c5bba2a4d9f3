package haproxy

import "github.com/pgsvc/pgsvc/pkg/haproxyproc"

// procID names one HAProxy worker process among those the driver has seen:
// its pid and its start time (haproxyproc.Table, fed with `show info`'s Pid
// and Uptime_sec). The driver's caches of what runs (the read cache, the
// forced-up records) hold it where they would hold a pid; 0 is unknown.
type procID = haproxyproc.ID

// procTable tells the workers apart (see haproxyproc.Table).
type procTable = haproxyproc.Table
