package services

import (
	"reflect"
	"testing"
)

// TestEqualCoversEveryField changes each field of a service (and of its
// servers and candidates) in turn: Equal must see every change, or a memo
// keyed by it would hand on a stale result when a field is added.
func TestEqualCoversEveryField(t *testing.T) {
	base := func() Service {
		return Service{Cluster: "c", Name: "c-primary", Service: "primary", IP: "*", Port: 5433, Check: "/primary",
			Dest: "pgbouncer", DestPort: 6432, Balance: "roundrobin", Maxconn: 3000, DefaultServer: "inter 3s",
			Layout: "", RoleDependent: false,
			Servers:    []Server{{Name: "c-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, Weight: 100}},
			Candidates: []Server{{Name: "c-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, Weight: 100}}}
	}
	a, b := base(), base()
	if !Equal(&a, &b) {
		t.Fatal("equal services reported different")
	}
	st := reflect.TypeOf(Service{})
	for i := 0; i < st.NumField(); i++ {
		f := st.Field(i)
		if f.Type == reflect.TypeOf([]string(nil)) {
			b := base()
			reflect.ValueOf(&b).Elem().Field(i).Set(reflect.ValueOf([]string{"10.0.0.1"}))
			if Equal(&a, &b) {
				t.Errorf("Equal misses %s", f.Name)
			}
			continue
		}
		if f.Type.Kind() == reflect.Slice {
			sv := reflect.TypeOf(Server{})
			for j := 0; j < sv.NumField(); j++ {
				b := base()
				mutate(reflect.ValueOf(&b).Elem().Field(i).Index(0).Field(j))
				if Equal(&a, &b) {
					t.Errorf("Equal misses %s[0].%s", f.Name, sv.Field(j).Name)
				}
			}
			b := base()
			fv := reflect.ValueOf(&b).Elem().Field(i)
			fv.Set(reflect.Append(fv, fv.Index(0)))
			if Equal(&a, &b) {
				t.Errorf("Equal misses a longer %s", f.Name)
			}
			continue
		}
		b := base()
		mutate(reflect.ValueOf(&b).Elem().Field(i))
		if Equal(&a, &b) {
			t.Errorf("Equal misses field %s", f.Name)
		}
	}
}

func mutate(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int:
		v.SetInt(v.Int() + 1)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	default:
		panic("mutate: unhandled kind " + v.Kind().String())
	}
}
