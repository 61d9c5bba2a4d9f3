package topology

// Built-in defaults: the lowest layer of variable precedence
// (defaults < all.vars < group vars < host vars). They mirror Pigsty's role
// defaults for the variables this project reads.
const (
	defaultPgPort        = 5432
	defaultPgbouncerPort = 6432
	defaultPatroniPort   = 8008
	defaultWeight        = 100
	defaultNamespace     = "/pg"
	defaultServiceDest   = "pgbouncer"
	defaultServiceIP     = "*"
	defaultDest          = "default"
	defaultCheck         = "/"
	defaultMaxconn       = 5000
	defaultBalance       = "roundrobin"
	defaultServerOptions = "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"
)

// MaxMaxconn is the largest service maxconn accepted: HAProxy reads a
// frontend's maxconn into a C int (it documents no lower cap), so a larger
// value would wrap or be refused by HAProxy when the configuration loads.
const MaxMaxconn = 1<<31 - 1

// DefaultServerOptions is the default-server line Pigsty uses when a service
// sets no options.
const DefaultServerOptions = defaultServerOptions

// defaultVars returns a fresh copy of the built-in defaults, shaped as
// yaml.v3 decodes them (ints as int), so they go through the same validation
// as inventory values. A fresh copy per call keeps inventories independent.
func defaultVars() map[string]any {
	svc := func(name string, port int, dest, check, selector, backup string) map[string]any {
		m := map[string]any{"name": name, "port": port, "dest": dest, "check": check, "selector": selector}
		if backup != "" {
			m["backup"] = backup
		}
		return m
	}
	return map[string]any{
		"pg_default_services": []any{
			svc("primary", 5433, "default", "/primary", "[]", ""),
			svc("replica", 5434, "default", "/read-only", "[]", "[? pg_role == `primary` || pg_role == `offline` ]"),
			svc("default", 5436, "postgres", "/primary", "[]", ""),
			svc("offline", 5438, "postgres", "/replica", "[? pg_role == `offline` || pg_offline_query ]", "[? pg_role == `replica` && !pg_offline_query]"),
		},
		"pg_services":             []any{},
		"pg_default_service_dest": defaultServiceDest,
		"pg_port":                 defaultPgPort,
		"pgbouncer_port":          defaultPgbouncerPort,
		"patroni_port":            defaultPatroniPort,
		"pg_weight":               defaultWeight,
		"pg_namespace":            defaultNamespace,
		// Pigsty's default; spelled out so selectors such as !pg_offline_query
		// see a boolean rather than null.
		"pg_offline_query": false,
	}
}
