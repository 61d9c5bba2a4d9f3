// Package config is the schema of `controller run --config FILE`: strict
// decoding (unknown fields are errors), defaults in one place, and errors that
// name the file and the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the controller's daemon configuration.
type Config struct {
	// File is where the config was read from ("" for flags only).
	File string `yaml:"-"`
	// Inventory is the Pigsty inventory (pigsty.yml) path.
	Inventory string `yaml:"inventory"`
	// PigstyVersion renders health checks as this Pigsty version does:
	// auto (from the inventory, the default), v3 or v4.
	PigstyVersion string `yaml:"pigsty_version"`
	// IncludeUnknown serves members Patroni reports that the inventory lacks.
	IncludeUnknown bool `yaml:"include_unknown"`
	// WatchInventory reloads the inventory when the file changes (as SIGHUP).
	WatchInventory bool `yaml:"watch_inventory"`
	// Listen is the status/metrics address (127.0.0.1:9876).
	Listen string `yaml:"listen"`
	// DryRun computes and diffs but never changes HAProxy.
	DryRun       bool           `yaml:"dry_run"`
	Etcd         Etcd           `yaml:"etcd"`
	DataPlaneAPI []DataPlaneAPI `yaml:"dataplaneapi"`
	Direct       []Direct       `yaml:"direct"`
	Controller   Controller     `yaml:"controller"`
	Election     Election       `yaml:"election"`
	Log          Log            `yaml:"log"`
}

// Etcd is how to reach the DCS.
type Etcd struct {
	Endpoints    []string `yaml:"endpoints"`
	CAFile       string   `yaml:"ca_file"`
	CertFile     string   `yaml:"cert_file"`
	KeyFile      string   `yaml:"key_file"`
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	DialTimeout  Duration `yaml:"dial_timeout"`
}

// DataPlaneAPI is one HAProxy managed through its Data Plane API (v2 or v3).
type DataPlaneAPI struct {
	// URL like http://admin:secret@127.0.0.1:5555 (credentials may also come
	// from Username/PasswordFile or PGSVC_DATAPLANEAPI_PASSWORD).
	URL          string `yaml:"url"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// Clusters limits this HAProxy to these clusters' services (empty = all):
	// Pigsty's one-HAProxy-per-member layout, or a pg_service_provider group.
	// On a template URL (with {host}, see HostPlaceholder) it keeps only
	// these clusters of each node.
	Clusters []string `yaml:"clusters"`
	// APIVersion is auto (default: detected from /v3/info vs /v2/info), v2
	// (Data Plane API 2.x) or v3 (3.x).
	APIVersion string `yaml:"api_version"`
	// Layout is "pigsty" (default) or "twins" (see Direct.Layout): role
	// changes through the runtime server endpoints, no configuration write.
	Layout string `yaml:"layout"`
	// RuntimeReadEvery (twins layout): between two full reads of every
	// twin backend's runtime admin states the controller trusts what it
	// set and read back, plus the running process's pid (a reload or
	// restart is read at once); the full read finds an operator's `set
	// server` (10m).
	RuntimeReadEvery Duration `yaml:"runtime_read_every"`
	// ReloadTimeout bounds the wait for a reload the API reports (and for
	// the running HAProxy to serve the new file after it): 30s by default.
	// A reload command that exits 0 whether or not HAProxy loads the file
	// (`systemctl reload`) makes a refused file known only after it.
	ReloadTimeout Duration `yaml:"reload_timeout"`
}

// Direct is one local HAProxy driven without the Data Plane API.
type Direct struct {
	ConfigPath      string `yaml:"config_path"`
	StatsSocket     string `yaml:"stats_socket"`
	MasterSocket    string `yaml:"master_socket"`
	ServerStateFile string `yaml:"server_state_file"`
	HAProxyBin      string `yaml:"haproxy_bin"`
	// Maxconn is HAProxy's global maxconn (8000; at most MaxDirectMaxconn).
	Maxconn        int  `yaml:"maxconn"`
	NoStrictLimits bool `yaml:"no_strict_limits"`
	// Clusters limits this HAProxy to these clusters' services (empty = all).
	Clusters []string `yaml:"clusters"`
	// Layout is "pigsty" (default: the servers the selectors choose, a role
	// change rewrites backup flags and reloads) or "twins" (every member
	// twice in role-dependent services, a role change is runtime admin
	// states only: see docs/twins.md).
	Layout string `yaml:"layout"`
	// RuntimeReadEvery: between two full reads of the running HAProxy
	// (show stat, show servers state, the file) the driver trusts what it
	// read and applied, plus the worker's pid and start time (a reload or
	// restart, also one keeping the pid as in a container, is read at
	// once) and the file's size and time; the full read finds an
	// operator's runtime change (10m).
	RuntimeReadEvery Duration `yaml:"runtime_read_every"`
}

// Controller tunes the reconcile loop.
type Controller struct {
	Debounce       Duration `yaml:"debounce"`
	ResyncInterval Duration `yaml:"resync_interval"`
	StaleAfter     Duration `yaml:"stale_after"`
	ApplyTimeout   Duration `yaml:"apply_timeout"`
	// FenceHold keeps a demoting primary out of write services this long
	// after a new leader took the key (5s; about inter + (fall-1) x fastinter).
	FenceHold Duration `yaml:"fence_hold"`
	// PromoteWindow: this long after a member took the leader key, write
	// services force it UP once Patroni reports it running as primary (15s).
	PromoteWindow Duration `yaml:"promote_window"`
	HistorySize   int      `yaml:"history_size"`
	// PatroniCAFile verifies Patroni REST APIs served over https, probed
	// during switchovers and failovers (/pg/cert/ca.crt, Pigsty's CA).
	PatroniCAFile string `yaml:"patroni_ca_file"`
}

// Election makes several controller instances elect one that applies changes.
type Election struct {
	Enabled bool `yaml:"enabled"`
	// Key is the etcd election prefix (/pgsvc/election).
	Key string `yaml:"key"`
	// TTL is the session lease in seconds (5).
	TTL int `yaml:"ttl"`
	// Identity names this instance (hostname + listen address).
	Identity string `yaml:"identity"`
}

// Log selects the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// Duration is a time.Duration written as "500ms", "30s" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration like 500ms or 30s", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration like 500ms or 30s", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Default returns the configuration with every default filled in.
func Default() *Config {
	c := &Config{}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills the zero fields with their defaults (the one place
// defaults live).
func (c *Config) ApplyDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9876"
	}
	if len(c.Etcd.Endpoints) == 0 {
		c.Etcd.Endpoints = []string{"http://127.0.0.1:2379"}
	}
	if c.Etcd.DialTimeout.Duration == 0 {
		c.Etcd.DialTimeout.Duration = 5 * time.Second
	}
	if c.Controller.Debounce.Duration == 0 {
		c.Controller.Debounce.Duration = 50 * time.Millisecond
	}
	if c.Controller.ResyncInterval.Duration == 0 {
		c.Controller.ResyncInterval.Duration = 30 * time.Second
	}
	if c.Controller.StaleAfter.Duration == 0 {
		c.Controller.StaleAfter.Duration = 10 * time.Second
	}
	if c.Controller.ApplyTimeout.Duration == 0 {
		c.Controller.ApplyTimeout.Duration = 60 * time.Second
	}
	if c.Controller.FenceHold.Duration == 0 {
		c.Controller.FenceHold.Duration = 5 * time.Second
	}
	if c.Controller.PromoteWindow.Duration == 0 {
		c.Controller.PromoteWindow.Duration = 15 * time.Second
	}
	if c.Controller.HistorySize == 0 {
		c.Controller.HistorySize = 100
	}
	if c.Controller.PatroniCAFile == "" {
		c.Controller.PatroniCAFile = "/pg/cert/ca.crt"
	}
	if c.Election.Key == "" {
		c.Election.Key = "/pgsvc/election"
	}
	if c.Election.TTL == 0 {
		c.Election.TTL = 5
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for i := range c.Direct {
		d := &c.Direct[i]
		if d.HAProxyBin == "" {
			d.HAProxyBin = "haproxy"
		}
		if d.Maxconn == 0 {
			d.Maxconn = 8000
		}
	}
}

// Load reads, strictly decodes and validates a config file. It does not
// apply defaults for fields flags may still set; call ApplyDefaults and
// Validate after merging flags.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse strictly decodes a config document; file names it in errors.
func Parse(file string, data []byte) (*Config, error) {
	c := &Config{File: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	c.File = file
	return c, nil
}

// Validate checks cross-field rules; errors name the file and the field.
func (c *Config) Validate() error {
	where := c.File
	if where == "" {
		where = "flags"
	}
	bad := func(field, msg string, a ...any) error {
		return fmt.Errorf("%s: %s: %s", where, field, fmt.Sprintf(msg, a...))
	}
	if c.Inventory == "" {
		return bad("inventory", "required (path of the Pigsty inventory, or --inventory)")
	}
	switch c.PigstyVersion {
	case "", "auto", "v3", "v4":
	default:
		return bad("pigsty_version", "%q: want auto, v3 or v4", c.PigstyVersion)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q is not host:port", c.Listen)
	}
	for i, e := range c.Etcd.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%q is not an http(s)://host:port URL", redactMalformed(e))
		}
		if u.User != nil {
			// The etcd client ignores them silently (and a password
			// here would be logged and shown in ps).
			return bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%q: credentials in an etcd endpoint URL are not used; "+
				"give etcd.username and etcd.password_file (or etcd.password) instead", redact(e))
		}
	}
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		return bad("etcd.cert_file", "cert_file and key_file go together")
	}
	if c.Etcd.Password != "" && c.Etcd.PasswordFile != "" {
		return bad("etcd.password_file", "set password or password_file, not both")
	}
	if len(c.DataPlaneAPI) == 0 && len(c.Direct) == 0 {
		return bad("dataplaneapi", "no HAProxy target: give at least one dataplaneapi URL or direct HAProxy")
	}
	for i, d := range c.DataPlaneAPI {
		if rt := d.ReloadTimeout.Duration; rt != 0 && (rt < time.Second || rt > 10*time.Minute) {
			return bad(fmt.Sprintf("dataplaneapi[%d].reload_timeout", i), "%s: want 1s to 10m", rt)
		}
		if d.Layout != "" && d.Layout != "pigsty" && d.Layout != "twins" {
			return bad(fmt.Sprintf("dataplaneapi[%d].layout", i), "%q: want pigsty or twins", d.Layout)
		}
		if d.IsTemplate() {
			if err := validateTemplate(d.URL); err != nil {
				return bad(fmt.Sprintf("dataplaneapi[%d].url", i), "%q: %v", redactTemplate(d.URL), err)
			}
			continue
		}
		u, err := url.Parse(d.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad(fmt.Sprintf("dataplaneapi[%d].url", i), "%q is not an http(s)://[user:pass@]host:port URL", redact(d.URL))
		}
		switch d.APIVersion {
		case "", "auto", "v2", "v3":
		default:
			return bad(fmt.Sprintf("dataplaneapi[%d].api_version", i), "%q: want auto, v2 or v3", d.APIVersion)
		}

	}
	for i, d := range c.Direct {
		f := fmt.Sprintf("direct[%d]", i)
		switch {
		case d.ConfigPath == "":
			return bad(f+".config_path", "required (the haproxy.cfg the controller owns)")
		case d.StatsSocket == "":
			return bad(f+".stats_socket", "required (an admin-level stats socket)")
		case d.MasterSocket == "":
			return bad(f+".master_socket", "required (haproxy -W -S <master socket>)")
		case d.ServerStateFile == "":
			return bad(f+".server_state_file", "required: without it every reload starts servers UP and misroutes writes")
		case d.Layout != "" && d.Layout != "pigsty" && d.Layout != "twins":
			return bad(f+".layout", "%q: want pigsty or twins", d.Layout)
		case d.Maxconn < 0 || d.Maxconn > MaxDirectMaxconn:
			return bad(f+".maxconn", "%d is out of range (1-%d; 0 or unset: 8000)", d.Maxconn, MaxDirectMaxconn)
		}
	}
	if err := c.Controller.validate(); err != nil {
		return bad(err.field, "%s", err.msg)
	}
	if c.Election.TTL < 2 {
		return bad("election.ttl", "must be at least 2 seconds")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		return bad("log.format", "%q is not json or console", c.Log.Format)
	}
	return nil
}

// redact hides the password of a URL with credentials.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "<redacted>@" + raw[i+1:]
		}
		return raw
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	return u.String()
}

// redactMalformed is redact for a string that is not a valid URL of the
// expected form, where url.Parse may not see credentials (no scheme, a
// typo in it): anything before the last @ is hidden.
func redactMalformed(raw string) string {
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "<redacted>@" + raw[i+1:]
	}
	return raw
}

// Redact returns raw with any password replaced, for logs and status.
func Redact(raw string) string { return redact(raw) }

// EtcdPassword returns the etcd password from the config or its file.
func (e Etcd) EtcdPassword() (string, error) {
	if e.PasswordFile == "" {
		return e.Password, nil
	}
	b, err := os.ReadFile(e.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("etcd.password_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
