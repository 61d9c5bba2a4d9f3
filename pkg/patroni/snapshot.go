package patroni

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"
)

// snapshotDoc is the output of `etcdctl get --prefix <ns> -w json`, and the
// fixture form of it (etcd_header, plain strings, extra fields).
type snapshotDoc struct {
	Header     *snapshotHeader   `json:"header"`
	EtcdHeader *snapshotHeader   `json:"etcd_header"`
	Kvs        []json.RawMessage `json:"kvs"`
}

type snapshotHeader struct {
	// Other header fields (cluster_id is a uint64 above int64's range) are
	// not needed and not decoded.
	Revision *int64 `json:"revision"`
}

type snapshotKV struct {
	Key            *string `json:"key"`
	Value          *string `json:"value"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
	Lease          int64   `json:"lease"`
}

// ParseSnapshot reads an `etcdctl get --prefix <ns> -w json` answer and
// returns its key-values and the header revision. etcdctl encodes keys and
// values in base64; a key starting with "/" (every Patroni key does, and no
// base64 encoding of one does) is taken as plain text, its value too, which
// is the form of hand-written fixtures. Both "header" and "etcd_header" are
// accepted; a snapshot with neither (hand-written) is accepted with revision
// 0 (unknown) as long as it has kvs. Errors name file and field.
//
// The values are not judged here: Decode does that per cluster, as for a
// live watch (a member name HAProxy could not take is skipped with a key
// error of its cluster), so one cluster's bad keys do not make a snapshot of
// every cluster unusable.
func ParseSnapshot(file string, data []byte) ([]KV, int64, error) {
	var doc snapshotDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, 0, fmt.Errorf("%s: invalid snapshot JSON: %w", file, err)
	}
	h := doc.Header
	field := "header"
	if h == nil {
		h, field = doc.EtcdHeader, "etcd_header"
	}
	if h == nil {
		if doc.Kvs == nil {
			return nil, 0, fmt.Errorf("%s: kvs missing (and no header: not an etcdctl -w json answer)", file)
		}
		zero := int64(0) // hand-written: revision unknown
		h = &snapshotHeader{Revision: &zero}
	}
	if h.Revision == nil {
		return nil, 0, fmt.Errorf("%s: %s.revision missing", file, field)
	}
	if *h.Revision < 0 {
		return nil, 0, fmt.Errorf("%s: %s.revision %d is negative", file, field, *h.Revision)
	}
	kvs := make([]KV, 0, len(doc.Kvs))
	for i, raw := range doc.Kvs {
		var sk snapshotKV
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&sk); err != nil {
			return nil, 0, fmt.Errorf("%s: kvs[%d]: %w", file, i, err)
		}
		if sk.Key == nil || *sk.Key == "" {
			return nil, 0, fmt.Errorf("%s: kvs[%d].key missing", file, i)
		}
		kv := KV{
			CreateRevision: sk.CreateRevision,
			ModRevision:    sk.ModRevision,
			Version:        sk.Version,
			Lease:          sk.Lease,
		}
		plain := strings.HasPrefix(*sk.Key, "/")
		if plain {
			kv.Key = *sk.Key
			if sk.Value != nil {
				kv.Value = []byte(*sk.Value)
			}
		} else {
			k, err := base64.StdEncoding.DecodeString(*sk.Key)
			if err != nil {
				return nil, 0, fmt.Errorf("%s: kvs[%d].key: neither a plain key (starting with /) nor base64: %w", file, i, err)
			}
			if !utf8.Valid(k) {
				return nil, 0, fmt.Errorf("%s: kvs[%d].key: base64 decodes to invalid UTF-8", file, i)
			}
			kv.Key = string(k)
			if sk.Value != nil {
				v, err := base64.StdEncoding.DecodeString(*sk.Value)
				if err != nil {
					return nil, 0, fmt.Errorf("%s: kvs[%d].value (key %s): invalid base64: %w", file, i, kv.Key, err)
				}
				kv.Value = v
			}
		}
		kvs = append(kvs, kv)
	}
	return kvs, *h.Revision, nil
}

// LoadSnapshot reads and parses a snapshot file (see ParseSnapshot).
func LoadSnapshot(path string) ([]KV, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read snapshot: %w", err)
	}
	return ParseSnapshot(path, data)
}
