// Package freeport hands tests loopback TCP ports nothing listens on.
package freeport

import (
	"net"
	"sync"
	"testing"
)

// handedOut holds the ports Get returned in this process: the kernel may
// hand a port closed a moment ago to the next listen on port 0, and two
// servers of one test on one port fail (a service port equal to the Data
// Plane API's own made HAProxy refuse a test's first file).
var handedOut sync.Map

// Get returns a 127.0.0.1 port nothing listens on now that no earlier call
// in this process returned.
func Get(tb testing.TB) int {
	tb.Helper()
	return get(tb, &handedOut, func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	})
}

// get asks listen for ports until one is not in seen, and keeps it there.
func get(tb testing.TB, seen *sync.Map, listen func() (int, error)) int {
	tb.Helper()
	for range 100 {
		port, err := listen()
		if err != nil {
			tb.Fatal(err)
		}
		if _, dup := seen.LoadOrStore(port, true); !dup {
			return port
		}
	}
	tb.Fatal("no free port that was not handed out before")
	return 0
}
