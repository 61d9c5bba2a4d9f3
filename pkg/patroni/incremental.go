package patroni

import (
	"encoding/binary"
	"hash/maphash"
)

// decoder keeps the decoded state of one namespace's keys and decodes again
// only the clusters whose keys changed. Decode files every key under one
// scope ("<scope>" or "<scope>/<group>") and decodes each scope from its own
// keys alone, so decoding one scope's keys gives exactly that scope's entry
// of Decode over all keys, but for the one thing a decoder remembers: the
// dynamic config flags of each scope's last config value that decoded,
// which a scope whose config key is absent or undecodable keeps, as Patroni
// does (ClusterState.ConfigKept; TestDecoderIsDecode). A ClusterState it
// returned is never modified afterwards: a changed scope gets a new one, so
// consumers may compare pointers to see what changed.
type decoder struct {
	ns      string
	prefix  string
	byScope map[string]map[string]*entry // scope -> key -> what is kept of it
	states  map[string]*ClusterState     // scope -> decoded state
	dirty   map[string]bool              // scopes to decode again
	// lastConfig: scope -> the flags of its last config value that
	// decoded. Kept across re-lists; forgotten with the scope's last key
	// (a cluster removed, or one whose every key expired, starts afresh).
	lastConfig map[string]configFlags
}

func newDecoder(ns string) *decoder {
	return &decoder{ns: ns, prefix: Prefix(ns), byScope: map[string]map[string]*entry{},
		states: map[string]*ClusterState{}, dirty: map[string]bool{}, lastConfig: map[string]configFlags{}}
}

// reset replaces every key (a fresh list). A scope whose keys are exactly
// as before keeps its keys and decoded state (the periodic re-list changes
// nothing for the consumers).
func (d *decoder) reset(cache map[string]KV) {
	// A scope still dirty has a state older than its keys: never kept.
	old, oldStates, oldDirty := d.byScope, d.states, d.dirty
	d.byScope = map[string]map[string]*entry{}
	d.states = map[string]*ClusterState{}
	d.dirty = map[string]bool{}
	for _, kv := range cache {
		d.put(kv)
	}
	for scope := range d.dirty {
		if st, ok := oldStates[scope]; ok && !oldDirty[scope] && sameKVs(old[scope], d.byScope[scope]) {
			d.states[scope] = st
			// The keys kept too (the list's copies are garbage at once):
			// a re-list every 30 s no longer replaces the whole
			// namespace's long-lived keys with new copies scattered
			// among that moment's garbage.
			d.byScope[scope] = old[scope]
			delete(d.dirty, scope)
		}
	}
	for scope := range d.lastConfig {
		if d.byScope[scope] == nil {
			delete(d.lastConfig, scope) // gone from the list
		}
	}
}

// entry is what the decoder keeps of one key: not its value once decoded
// (a 1,000-cluster namespace's values are a megabyte), but what decoding
// it gave (see assemble), its mod revision, and a hash of the value and
// the rest of its metadata for a re-list to compare. (Its key is the
// map's: a new value of the key updates the entry in place, the key's copy
// kept already stays.)
type entry struct {
	rev int64 // mod revision
	sum uint64
	dec any // rawValue until decoded
}

// sumSeed seeds the hashes of the values: one per process, as the hashes
// are compared within the process only.
var sumSeed = maphash.MakeSeed()

// kvSum hashes what sameKVs compares of kv but its key and mod revision.
func kvSum(kv KV) uint64 {
	var h maphash.Hash
	h.SetSeed(sumSeed)
	var meta [24]byte
	binary.LittleEndian.PutUint64(meta[0:], uint64(kv.CreateRevision))
	binary.LittleEndian.PutUint64(meta[8:], uint64(kv.Version))
	binary.LittleEndian.PutUint64(meta[16:], uint64(kv.Lease))
	h.Write(meta[:])
	h.Write(kv.Value)
	return h.Sum64()
}

// sameKVs reports whether a and b hold the same keys with the same values
// and metadata (the values and the metadata other than the mod revision
// by their hashes).
func sameKVs(a, b map[string]*entry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.rev != y.rev || x.sum != y.sum {
			return false
		}
	}
	return true
}

func (d *decoder) put(kv KV) {
	scope, _, _, ok := splitKey(d.prefix, kv.Key)
	if !ok {
		return // Decode ignores it
	}
	m := d.byScope[scope]
	if m == nil {
		m = map[string]*entry{}
		d.byScope[scope] = m
	}
	e := entry{rev: kv.ModRevision, sum: kvSum(kv), dec: rawValue(kv.Value)}
	if old := m[kv.Key]; old != nil {
		// In place: the key's copy kept already stays (a new value, the
		// same key), and no assignment to a full small map, which would
		// grow it.
		*old = e
	} else {
		m[kv.Key] = &e
	}
	d.dirty[scope] = true
}

func (d *decoder) del(key string) {
	scope, _, _, ok := splitKey(d.prefix, key)
	if !ok {
		return
	}
	m := d.byScope[scope]
	if _, had := m[key]; !had {
		return
	}
	delete(m, key)
	if len(m) == 0 {
		delete(d.byScope, scope)
	}
	d.dirty[scope] = true
}

// clusters decodes the scopes whose keys changed and returns a new map of
// every scope's state (Decode's answer for all keys).
func (d *decoder) clusters() map[string]*ClusterState {
	for scope := range d.dirty {
		m := d.byScope[scope]
		items := make([]item, 0, len(m))
		for k, e := range m {
			items = append(items, item{key: k, rev: e.rev, dec: e.dec})
		}
		st := assemble(d.prefix, items, d.lastGood)[scope]
		// What the values decoded to replaces them (the keys unchanged
		// since decode from it again).
		for _, it := range items {
			m[it.key].dec = it.dec
		}
		if st != nil {
			d.states[scope] = st
			if e := m[d.prefix+scope+"/"+keyConfig]; st.ConfigRead && e != nil {
				d.lastConfig[scope] = flagsOf(st, e.rev)
			}
		} else {
			delete(d.states, scope)
			delete(d.lastConfig, scope)
		}
	}
	clear(d.dirty)
	out := make(map[string]*ClusterState, len(d.states))
	for k, v := range d.states {
		out[k] = v
	}
	return out
}

// lastGood gives the flags of scope's last config value that decoded.
func (d *decoder) lastGood(scope string) (configFlags, bool) {
	f, ok := d.lastConfig[scope]
	return f, ok
}
