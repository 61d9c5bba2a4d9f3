// Package freeport hands tests and the benchmark loopback TCP ports nothing
// listens on.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// handedOut holds the ports Get returned in this process: the kernel may
// hand a port closed a moment ago to the next listen on port 0, and two
// servers of one test on one port fail (a service port equal to the Data
// Plane API's own made HAProxy refuse a test's first file).
var handedOut sync.Map

// Get returns a 127.0.0.1 port nothing listens on now that no earlier call
// of Get or Fresh in this process returned (see Pick).
func Get(tb testing.TB) int {
	tb.Helper()
	port, err := Fresh()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// Fresh is Get for code outside tests (the benchmark).
func Fresh() (int, error) { return fresh(&handedOut, Pick) }

// fresh asks listen for ports until one is not in seen, and keeps it there.
func fresh(seen *sync.Map, listen func() (int, error)) (int, error) {
	for range 100 {
		port, err := listen()
		if err != nil {
			return 0, err
		}
		if _, dup := seen.LoadOrStore(port, true); !dup {
			return port, nil
		}
	}
	return 0, errors.New("no free port that was not handed out before")
}

// lowest is the least port Pick returns: above the well-known and most
// registered services' ports this project's stacks use (etcd 2379,
// PostgreSQL 5432, HAProxy's 5433-5438, pgbouncer 6432, Patroni 8008).
const lowest = 20000

// Pick returns a 127.0.0.1 port nothing listens on now, below the kernel's
// ephemeral range (ip_local_port_range) when there is room. A port from
// listening on port 0 is an ephemeral one: until the server meant for it
// binds it, any outgoing connection on the machine may take it as its
// local port (a benchmark's controller failed to listen that way: "bind:
// address already in use"). A port below the range is never taken so.
func Pick() (int, error) {
	if lo := ephemeralLow(); lo-lowest > 100 {
		for range 200 {
			p := lowest + rand.IntN(lo-lowest)
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue // in use: another
			}
			l.Close()
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the low end of the kernel's ephemeral port range (32768,
// Linux's default, when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 0 {
		return 32768
	}
	return lo
}
