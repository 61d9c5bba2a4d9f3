package haproxy

import (
	"sync"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// forcedUp remembers the servers this driver forced UP, per HAProxy worker.
// A new primary is forced UP once per promotion (while desired keeps
// ForceUp on it): found DOWN again in the same worker afterwards, its
// checks failed since (or an operator set it), and it is left to them — a
// force-up never goes against a later real check failure. A new worker (a
// reload, a restart) starts without the record: there it may be forced UP
// once more; a worker is its pid and its start time (procTable), as a
// restarted HAProxy in its own pid namespace has the pid of the one before.
// The Data Plane API driver keeps the same rule (pkg/dataplaneapi/forced.go).
type forcedUp struct {
	mu   sync.Mutex
	proc map[string]procID // "backend/server" -> the worker when forced
}

// settle forgets the servers desired no longer forces UP, and marks not
// Down in snap the ones forced UP before in snap's worker (so that Diff
// does not force them again). snap's map is its own (readFor makes it).
func (f *forcedUp) settle(snap *snapshot, desired []services.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.proc) == 0 {
		return
	}
	keep := make(map[string]bool, len(f.proc))
	for _, s := range desired {
		if !target.WantsHealth(s) {
			continue
		}
		for _, sv := range s.Servers {
			if !sv.ForceUp {
				continue
			}
			k := s.Name + "/" + sv.Name
			proc, ok := f.proc[k]
			if !ok {
				continue
			}
			keep[k] = true
			if b := snap.current[s.Name]; b != nil && snap.proc != 0 && proc == snap.proc {
				if c, ok := b.Servers[sv.Name]; ok && c.Down {
					// snap's map is its own; the backend may be the cache's.
					b = cloneBackend(b)
					c.Down = false
					b.Servers[sv.Name] = c
					snap.current[s.Name] = b
				}
			}
		}
	}
	for k := range f.proc {
		if !keep[k] {
			delete(f.proc, k)
		}
	}
}

// note records the force-ups of changes, done in worker proc (0: unknown,
// nothing recorded).
func (f *forcedUp) note(proc procID, changes []target.Change) {
	if proc == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range changes {
		if c.Kind != target.KindForceUp {
			continue
		}
		if f.proc == nil {
			f.proc = map[string]procID{}
		}
		f.proc[c.Backend+"/"+c.Server] = proc
	}
}
