package main

import (
	"sync"
	"time"
)

// rssEvery is how often rssMonitor reads the controller's RSS.
const rssEvery = 100 * time.Millisecond

// rssMonitor reads a process's VmRSS every rssEvery until stopped: a single
// read at the end of a phase misses what the phase's own work (a resync, a
// scrape, an apply) raised it to in between.
type rssMonitor struct {
	mu      sync.Mutex
	samples []rssSample
	stop    chan struct{}
	done    chan struct{}
}

type rssSample struct {
	at time.Time
	mb float64
	// file is the file-backed part of mb (RssFile: the binary's pages;
	// the rest is the process's own memory, RssAnon).
	file float64
}

func startRSS(pid int) *rssMonitor {
	m := &rssMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			if rss, file := procRSS(pid); rss > 0 {
				m.mu.Lock()
				m.samples = append(m.samples, rssSample{at: time.Now(), mb: rss, file: file})
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// close stops the monitor (nil-safe, once).
func (m *rssMonitor) close() {
	if m == nil {
		return
	}
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// span returns the least and the greatest RSS read in [from, to] and how
// many reads there were (0: none).
func (m *rssMonitor) span(from, to time.Time) (lo, hi float64, n int) {
	if m == nil {
		return 0, 0, 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		if n == 0 || s.mb < lo {
			lo = s.mb
		}
		if n == 0 || s.mb > hi {
			hi = s.mb
		}
		n++
	}
	return lo, hi, n
}

// fileAtPeak returns the file-backed part of the greatest RSS read in
// [from, to] (0: no read).
func (m *rssMonitor) fileAtPeak(from, to time.Time) float64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var hi, file float64
	for _, s := range m.samples {
		if s.at.Before(from) || s.at.After(to) || s.mb <= hi {
			continue
		}
		hi, file = s.mb, s.file
	}
	return file
}
