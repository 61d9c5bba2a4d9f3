package dataplaneapi

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"

	v5 "github.com/haproxytech/client-native/v5/models"
)

// A whole-object PUT replaces the object. The driver builds it on a GET of
// that object decoded into client-native v5 models; on a v3 API the object
// may carry fields v6 has and v5 does not (guid, metadata, sslv3/tlsv1x as
// flags, init-state, ...). So on v3 the client keeps the JSON of the last
// single-object GET of a backend, frontend, bind or server, and the PUT
// that follows sends that JSON with every field v5 knows replaced by the
// driver's model (a v5 field the model leaves empty is removed, as a PUT
// means) and every field only v6 knows kept as the API gave it.

type v3Objects struct {
	mu   sync.Mutex
	last map[string]map[string]json.RawMessage // v3 route -> object
}

func (o *v3Objects) keep(route string, data []byte, list bool) {
	if !v3Kept(route, list) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		o.last = map[string]map[string]json.RawMessage{}
	}
	if len(o.last) > 64 { // only the objects about to be replaced matter
		o.last = map[string]map[string]json.RawMessage{}
	}
	if !list {
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) == nil {
			o.last[route] = m
		}
		return
	}
	var items []map[string]json.RawMessage
	if json.Unmarshal(data, &items) != nil {
		return
	}
	for _, m := range items {
		var name string
		if json.Unmarshal(m["name"], &name) == nil && name != "" {
			o.last[route+"/"+name] = m
		}
	}
}

func (o *v3Objects) take(route string) map[string]json.RawMessage {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.last[route]
	delete(o.last, route)
	return m
}

// v3Kept: single backends, frontends and servers, and bind lists.
func v3Kept(route string, list bool) bool {
	seg := strings.Split(strings.TrimPrefix(route, "/"), "/")
	if len(seg) < 3 || seg[0] != "configuration" {
		return false
	}
	switch {
	case !list && len(seg) == 3 && (seg[1] == "backends" || seg[1] == "frontends"):
		return true
	case !list && len(seg) == 5 && seg[1] == "backends" && seg[3] == "servers":
		return true
	case list && len(seg) == 4 && seg[1] == "frontends" && seg[3] == "binds":
		return true
	}
	return false
}

// mergeV3 returns base with every key of v5type's JSON replaced by body's
// (removed when body lacks it) and the other keys kept.
func mergeV3(base map[string]json.RawMessage, body any, v5type reflect.Type) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(b, &want); err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(base)+len(want))
	known := jsonKeys(v5type)
	for k, v := range base {
		if !known[k] {
			out[k] = v
		}
	}
	for k, v := range want {
		out[k] = v
	}
	return out, nil
}

var keyCache sync.Map // reflect.Type -> map[string]bool

// jsonKeys lists the JSON names of a model's fields, embedded (inline)
// structs included.
func jsonKeys(t reflect.Type) map[string]bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v, ok := keyCache.Load(t); ok {
		return v.(map[string]bool)
	}
	out := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("json"), ",")[0]
			if f.Anonymous && (name == "" || name == "-") {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
				}
				continue
			}
			if name != "" && name != "-" {
				out[name] = true
			}
		}
	}
	walk(t)
	keyCache.Store(t, out)
	return out
}

// v5TypeOf is the v5 model type of a body the driver PUTs, nil for others.
func v5TypeOf(body any) reflect.Type {
	switch body.(type) {
	case *v5.Server, *v5.Backend, *v5.Frontend, *v5.Bind:
		return reflect.TypeOf(body)
	}
	return nil
}
