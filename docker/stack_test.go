package docker

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// The service names the checks start from; everything else is followed from
// docker-compose.yml (mount targets, COPY destinations, config fields).
const (
	controllerService = "controller"
	patroniConfigPath = "/etc/patroni/patroni.yml" // where member services mount their Patroni config
	pgbouncerConfPath = "/etc/pgbouncer/pgbouncer.ini"
)

// stack is docker-compose.yml and the repository it lives in.
type stack struct {
	root string // repository root (compose paths are relative to it)
	file string
	c    *composeFile
}

func loadStack(t *testing.T) *stack {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "docker-compose.yml")
	c, err := loadCompose(file)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{root: root, file: file, c: c}
}

// path resolves a compose-relative path.
func (s *stack) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.root, filepath.FromSlash(p))
}

// names returns the service names, sorted, for stable messages.
func (s *stack) names() []string {
	var n []string
	for k := range s.c.Services {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// ipOf returns the service's static address ("" when it has none).
func (s *stack) ipOf(name string) string {
	svc := s.c.Services[name]
	if svc == nil {
		return ""
	}
	for _, n := range svc.Networks {
		if n != nil && n.IPv4Address != "" {
			return n.IPv4Address
		}
	}
	return ""
}

// resolve finds the service a host name or address in a config means:
// its service name, hostname or static address.
func (s *stack) resolve(host string) (string, bool) {
	for _, name := range s.names() {
		svc := s.c.Services[name]
		if host == name || (svc.Hostname != "" && host == svc.Hostname) || (host != "" && host == s.ipOf(name)) {
			return name, true
		}
	}
	return "", false
}

// bindSource returns the host file a service mounts at target.
func (s *stack) bindSource(service, target string) (string, error) {
	svc := s.c.Services[service]
	if svc == nil {
		return "", fmt.Errorf("no service %q in %s", service, s.file)
	}
	for _, m := range svc.Volumes {
		if m.Target == target && m.Type == "bind" {
			return s.path(m.Source), nil
		}
	}
	return "", fmt.Errorf("services.%s mounts nothing at %s", service, target)
}

// built returns a service's build context, Dockerfile path and parsed COPY/ADD instructions.
func (s *stack) built(service string) (ctx, dockerfile string, ins []instruction, cps []copyInstr, err error) {
	svc := s.c.Services[service]
	if svc == nil || svc.Build == nil {
		return "", "", nil, nil, fmt.Errorf("services.%s has no build section", service)
	}
	ctx = s.path(svc.Build.Context)
	dockerfile = filepath.Join(ctx, filepath.FromSlash(svc.Build.dockerfile()))
	if ins, err = parseDockerfile(dockerfile); err != nil {
		return "", "", nil, nil, err
	}
	cps, err = copies(dockerfile, ins)
	return ctx, dockerfile, ins, cps, err
}

// installedFile returns the context file a service's image installs at dst.
func (s *stack) installedFile(service, dst string) (string, error) {
	ctx, dockerfile, _, cps, err := s.built(service)
	if err != nil {
		return "", err
	}
	src, ok := installed(cps, ctx)[dst]
	if !ok {
		return "", fmt.Errorf("%s installs nothing at %s", s.rel(dockerfile), dst)
	}
	return src, nil
}

func (s *stack) rel(p string) string {
	if r, err := filepath.Rel(s.root, p); err == nil {
		return filepath.ToSlash(r)
	}
	return p
}

// controllerFiles returns the controller's loaded config and the host paths
// of its config and inventory, following the command's --config and the mounts.
func (s *stack) controllerFiles() (*config.Config, string, string, error) {
	svc := s.c.Services[controllerService]
	if svc == nil {
		return nil, "", "", fmt.Errorf("%s: no %q service", s.file, controllerService)
	}
	i := slices.Index(svc.Command, "--config")
	if i < 0 || i+1 >= len(svc.Command) {
		return nil, "", "", fmt.Errorf("services.%s.command: no --config FILE", controllerService)
	}
	cfgHost, err := s.bindSource(controllerService, svc.Command[i+1])
	if err != nil {
		return nil, "", "", err
	}
	cfg, err := config.Load(cfgHost)
	if err != nil {
		return nil, "", "", err
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, "", "", err
	}
	invHost, err := s.bindSource(controllerService, cfg.Inventory)
	if err != nil {
		return nil, "", "", fmt.Errorf("%s: inventory %s: %w", s.rel(cfgHost), cfg.Inventory, err)
	}
	return cfg, cfgHost, invHost, nil
}

func (s *stack) inventory() (*topology.Inventory, error) {
	_, _, inv, err := s.controllerFiles()
	if err != nil {
		return nil, err
	}
	return topology.Load(inv)
}

// flagValue returns the value of --name=value or --name value in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// etcdClientPort returns the client port of an etcd service, from its
// --listen-client-urls (2379 when unset).
func (s *stack) etcdClientPort(service string) (string, error) {
	svc := s.c.Services[service]
	if svc == nil || !strings.Contains(svc.Image, "etcd") {
		return "", fmt.Errorf("%q is not an etcd service of %s", service, s.file)
	}
	v, ok := flagValue(svc.Command, "--listen-client-urls")
	if !ok {
		return "2379", nil
	}
	u, err := url.Parse(strings.Split(v, ",")[0])
	if err != nil {
		return "", fmt.Errorf("services.%s: --listen-client-urls %q: %w", service, v, err)
	}
	return u.Port(), nil
}

// dataplaneAPIFile is the Data Plane API config an HAProxy image ships.
type dataplaneAPIFile struct {
	ConfigVersion int    `yaml:"config_version"`
	Name          string `yaml:"name"`
	Mode          string `yaml:"mode"`
	DataPlaneAPI  struct {
		Host string `yaml:"host"`
		Port int    `yaml:"port"`
		User []struct {
			Name     string `yaml:"name"`
			Password string `yaml:"password"`
			Insecure bool   `yaml:"insecure"`
		} `yaml:"user"`
		Transaction map[string]any `yaml:"transaction"`
		Resources   map[string]any `yaml:"resources"`
	} `yaml:"dataplaneapi"`
	HAProxy struct {
		ConfigFile    string `yaml:"config_file"`
		HAProxyBin    string `yaml:"haproxy_bin"`
		MasterRuntime string `yaml:"master_runtime"`
		Reload        struct {
			ReloadDelay    int    `yaml:"reload_delay"`
			ReloadStrategy string `yaml:"reload_strategy"`
			ReloadCmd      string `yaml:"reload_cmd"`
			RestartCmd     string `yaml:"restart_cmd"`
		} `yaml:"reload"`
	} `yaml:"haproxy"`
}

// haproxyService is what the controller's Data Plane API URL points at.
type haproxyService struct {
	service string
	apiFile string // host path of dataplaneapi.yml
	api     dataplaneAPIFile
	cfgFile string // host path of haproxy.cfg
	reload  string // host path of the reload script
	entry   string // host path of the entrypoint script
}

// haproxyOf follows a Data Plane API URL to its service and the files its
// image ships.
func (s *stack) haproxyOf(raw string) (*haproxyService, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("dataplaneapi url: %w", err)
	}
	name, ok := s.resolve(u.Hostname())
	if !ok {
		return nil, fmt.Errorf("dataplaneapi url host %q is no service of %s", u.Hostname(), s.file)
	}
	ctx, dockerfile, ins, cps, err := s.built(name)
	if err != nil {
		return nil, err
	}
	h := &haproxyService{service: name}
	for dst, src := range installed(cps, ctx) {
		if filepath.Base(dst) == "dataplaneapi.yml" {
			h.apiFile = src
		}
	}
	if h.apiFile == "" {
		return nil, fmt.Errorf("%s installs no dataplaneapi.yml", s.rel(dockerfile))
	}
	if err := decodeFile(h.apiFile, &h.api, true); err != nil {
		return nil, err
	}
	if h.cfgFile, err = s.installedFile(name, h.api.HAProxy.ConfigFile); err != nil {
		return nil, fmt.Errorf("haproxy.config_file of %s: %w", s.rel(h.apiFile), err)
	}
	reloadCmd, _, _ := strings.Cut(h.api.HAProxy.Reload.ReloadCmd, " ")
	if h.reload, err = s.installedFile(name, reloadCmd); err != nil {
		return nil, fmt.Errorf("haproxy.reload.reload_cmd of %s: %w", s.rel(h.apiFile), err)
	}
	for _, in := range ins {
		if in.Cmd == "ENTRYPOINT" {
			var e stringList
			if err := yaml.Unmarshal([]byte(in.Args), &e); err != nil || len(e) == 0 {
				return nil, fmt.Errorf("%s:%d: ENTRYPOINT must be the JSON form", s.rel(dockerfile), in.Line)
			}
			if h.entry, err = s.installedFile(name, e[0]); err != nil {
				return nil, err
			}
		}
	}
	if h.entry == "" {
		return nil, fmt.Errorf("%s has no ENTRYPOINT", s.rel(dockerfile))
	}
	return h, nil
}

// decodeFile reads a YAML file into v; strict rejects unknown keys.
func decodeFile(file string, v any, strict bool) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(strict)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// errSkip marks a check that cannot run here; the message says why.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return e.reason }

// problems collects every finding of a check, so one run shows them all.
type problems []error

func (p *problems) add(format string, a ...any) { *p = append(*p, fmt.Errorf(format, a...)) }
func (p problems) err() error                   { return errors.Join(p...) }

func checkBuilds(s *stack) error {
	var p problems
	for _, name := range s.names() {
		svc := s.c.Services[name]
		if svc.Build == nil {
			if svc.Image == "" {
				p.add("services.%s: neither image nor build", name)
			}
			continue
		}
		ctx := s.path(svc.Build.Context)
		if st, err := os.Stat(ctx); err != nil || !st.IsDir() {
			p.add("services.%s.build.context %s: not a directory", name, svc.Build.Context)
			continue
		}
		df := filepath.Join(ctx, filepath.FromSlash(svc.Build.dockerfile()))
		if st, err := os.Stat(df); err != nil || st.IsDir() {
			p.add("services.%s.build.dockerfile %s: no such file in context %s", name, svc.Build.dockerfile(), svc.Build.Context)
		}
	}
	return p.err()
}

// goSourceExcluded reports a non-test Go file under dir that the ignore
// rules leave out of the context: go build in the image would miss it.
func goSourceExcluded(rules []ignoreRule, ctx, dir string) (string, int, error) {
	var excluded string
	included := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(ctx, p)
		if !ignored(rules, rel) {
			included++
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") && !strings.Contains(filepath.ToSlash(rel), "/testdata/") && excluded == "" {
			excluded = filepath.ToSlash(rel)
		}
		return nil
	})
	return excluded, included, err
}

func checkCopySources(s *stack) error {
	var p problems
	for _, name := range s.names() {
		if s.c.Services[name].Build == nil {
			continue
		}
		ctx, df, ins, cps, err := s.built(name)
		if err != nil {
			p.add("services.%s: %w", name, err)
			continue
		}
		stages := map[string]bool{}
		for _, in := range ins {
			if in.Cmd == "FROM" {
				f := strings.Fields(in.Args)
				if len(f) == 3 && strings.EqualFold(f[1], "AS") {
					stages[f[2]] = true
				}
			}
		}
		rules, ignoreFile, err := loadIgnore(ctx, df)
		if err != nil {
			p.add("services.%s: %w", name, err)
			continue
		}
		for _, c := range cps {
			where := fmt.Sprintf("%s:%d", s.rel(df), c.Line)
			if c.From != "" {
				if !stages[c.From] && !strings.ContainsAny(c.From, ":/") {
					p.add("%s: %s --from=%s names no build stage", where, c.Cmd, c.From)
				}
				continue
			}
			for _, src := range c.Sources {
				if c.Cmd == "ADD" && (strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")) {
					continue
				}
				matches, err := filepath.Glob(filepath.Join(ctx, filepath.FromSlash(src)))
				if err != nil || len(matches) == 0 {
					p.add("%s: %s source %q does not exist in context %s", where, c.Cmd, src, s.rel(ctx))
					continue
				}
				for _, m := range matches {
					rel, _ := filepath.Rel(ctx, m)
					if ignored(rules, rel) {
						p.add("%s: %s source %q is excluded by %s", where, c.Cmd, src, s.rel(ignoreFile))
						continue
					}
					if st, err := os.Stat(m); err == nil && st.IsDir() {
						ex, n, err := goSourceExcluded(rules, ctx, m)
						switch {
						case err != nil:
							p.add("%s: walk %s: %w", where, src, err)
						case n == 0:
							p.add("%s: %s source %q has no file left after %s", where, c.Cmd, src, s.rel(ignoreFile))
						case ex != "":
							p.add("%s: %s copies %q but %s excludes the Go source %s", where, c.Cmd, src, s.rel(ignoreFile), ex)
						}
					}
				}
			}
		}
	}
	return p.err()
}

func checkMounts(s *stack) error {
	var p problems
	for _, name := range s.names() {
		for _, m := range s.c.Services[name].Volumes {
			switch m.Type {
			case "bind":
				if _, err := os.Stat(s.path(m.Source)); err != nil {
					p.add("services.%s.volumes (line %d): bind source %s does not exist", name, m.Line, m.Source)
				}
			case "volume":
				if m.Source == "" {
					continue // anonymous
				}
				if _, ok := s.c.Volumes[m.Source]; !ok {
					p.add("services.%s.volumes (line %d): named volume %q is not declared under volumes", name, m.Line, m.Source)
				}
			default:
				p.add("services.%s.volumes (line %d): type %q is not bind or volume", name, m.Line, m.Type)
			}
			if !strings.HasPrefix(m.Target, "/") {
				p.add("services.%s.volumes (line %d): target %q is not an absolute container path", name, m.Line, m.Target)
			}
		}
	}
	return p.err()
}

func checkDependsOn(s *stack) error {
	var p problems
	for _, name := range s.names() {
		for _, d := range s.c.Services[name].DependsOn {
			target := s.c.Services[d.Service]
			switch {
			case target == nil:
				p.add("services.%s.depends_on (line %d): %q is not a service", name, d.Line, d.Service)
			case d.Service == name:
				p.add("services.%s.depends_on: depends on itself", name)
			case d.Condition == "service_healthy" && (target.Healthcheck == nil || target.Healthcheck.Disable || len(target.Healthcheck.Test) == 0):
				p.add("services.%s.depends_on.%s: service_healthy but %s has no healthcheck", name, d.Service, d.Service)
			case d.Condition != "service_started" && d.Condition != "service_healthy" && d.Condition != "service_completed_successfully":
				p.add("services.%s.depends_on.%s: unknown condition %q", name, d.Service, d.Condition)
			}
		}
	}
	return p.err()
}

func checkEnvFiles(s *stack) error {
	var p problems
	for _, name := range s.names() {
		for _, f := range s.c.Services[name].EnvFile {
			if st, err := os.Stat(s.path(f)); err != nil || st.IsDir() {
				p.add("services.%s.env_file: %s does not exist", name, f)
			}
		}
	}
	return p.err()
}

func checkPublishedPorts(s *stack) error {
	var p problems
	seen := map[string]string{}
	for _, name := range s.names() {
		for _, pt := range s.c.Services[name].Ports {
			if pt.HostIP != "127.0.0.1" {
				p.add("services.%s.ports %q (line %d): must bind 127.0.0.1, not %q", name, pt.Raw, pt.Line, pt.HostIP)
			}
			if pt.Published == "" {
				p.add("services.%s.ports %q: no fixed host port", name, pt.Raw)
				continue
			}
			key := pt.HostIP + ":" + pt.Published + "/" + pt.Protocol
			if other, ok := seen[key]; ok {
				p.add("services.%s.ports %q: host port %s already published by %s", name, pt.Raw, key, other)
			}
			seen[key] = name
		}
	}
	return p.err()
}

func checkNetwork(s *stack) error {
	var p problems
	seen := map[string]string{}
	for _, name := range s.names() {
		svc := s.c.Services[name]
		if len(svc.Networks) == 0 {
			p.add("services.%s: on no network (the stack uses a user-defined one)", name)
		}
		for nn, sn := range svc.Networks {
			n := s.c.Networks[nn]
			if n == nil {
				p.add("services.%s.networks: %q is not declared under networks", name, nn)
				continue
			}
			if sn == nil || sn.IPv4Address == "" {
				p.add("services.%s.networks.%s: no ipv4_address (the inventory needs fixed addresses)", name, nn)
				continue
			}
			addr, err := netip.ParseAddr(sn.IPv4Address)
			if err != nil {
				p.add("services.%s.networks.%s.ipv4_address %q: %w", name, nn, sn.IPv4Address, err)
				continue
			}
			in := false
			if n.IPAM != nil {
				for _, c := range n.IPAM.Config {
					pfx, err := netip.ParsePrefix(c.Subnet)
					if err != nil {
						p.add("networks.%s.ipam subnet %q: %w", nn, c.Subnet, err)
						continue
					}
					if pfx.Contains(addr) {
						in = true
						if addr == pfx.Masked().Addr() || addr.String() == c.Gateway {
							p.add("services.%s: %s is the network or gateway address of %s", name, addr, nn)
						}
					}
				}
			}
			if !in {
				p.add("services.%s.networks.%s: %s is outside the network's fixed subnet", name, nn, addr)
			}
			if other, ok := seen[addr.String()]; ok {
				p.add("services.%s: address %s already used by %s", name, addr, other)
			}
			seen[addr.String()] = name
		}
	}
	return p.err()
}

func checkControllerConfig(s *stack) error {
	cfg, cfgHost, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	var p problems
	if len(cfg.DataPlaneAPI) == 0 {
		p.add("%s: no dataplaneapi target (the stack's HAProxy is managed through its API)", s.rel(cfgHost))
	}
	_, lport, _ := net.SplitHostPort(cfg.Listen)
	published := false
	for _, pt := range s.c.Services[controllerService].Ports {
		if pt.Target == lport {
			published = true
		}
	}
	if !published {
		p.add("%s: listen %s: services.%s publishes no port %s", s.rel(cfgHost), cfg.Listen, controllerService, lport)
	}
	if h, _, _ := net.SplitHostPort(cfg.Listen); h == "127.0.0.1" || h == "localhost" {
		p.add("%s: listen %s is the container's own loopback: the published port would reach nothing", s.rel(cfgHost), cfg.Listen)
	}
	return p.err()
}

// inventoryHosts returns every host key of a Pigsty inventory, all groups.
func inventoryHosts(file string) ([]string, error) {
	var doc struct {
		All yaml.Node `yaml:"all"`
	}
	if err := decodeFile(file, &doc, false); err != nil {
		return nil, err
	}
	var hosts []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "hosts":
				for j := 0; j+1 < len(v.Content); j += 2 {
					hosts = append(hosts, v.Content[j].Value)
				}
			case "children":
				for j := 0; j+1 < len(v.Content); j += 2 {
					walk(v.Content[j+1])
				}
			}
		}
	}
	walk(&doc.All)
	return hosts, nil
}

func checkInventory(s *stack) error {
	_, _, invHost, err := s.controllerFiles()
	if err != nil {
		return err
	}
	inv, err := topology.Load(invHost)
	if err != nil {
		return err
	}
	var p problems
	if len(inv.Clusters) == 0 {
		p.add("%s: no cluster", s.rel(invHost))
	}
	for _, c := range inv.Clusters {
		for _, m := range c.Members {
			if s.c.Services[m.Name] == nil {
				p.add("%s: member %s has no compose service of that name", s.rel(invHost), m.Name)
				continue
			}
			if ip := s.ipOf(m.Name); ip != m.Host {
				p.add("%s: member %s is %s but services.%s has address %q", s.rel(invHost), m.Name, m.Host, m.Name, ip)
			}
		}
	}
	hosts, err := inventoryHosts(invHost)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if _, ok := s.resolve(h); !ok {
			p.add("%s: host %s is no service address of %s", s.rel(invHost), h, s.rel(s.file))
		}
	}
	return p.err()
}

func checkPrimaryStartsFirst(s *stack) error {
	inv, err := s.inventory()
	if err != nil {
		return err
	}
	var p problems
	for _, c := range inv.Clusters {
		var primary string
		for _, m := range c.Members {
			if m.Role == "primary" {
				primary = m.Name
			}
		}
		for _, m := range c.Members {
			if m.Name == primary || s.c.Services[m.Name] == nil {
				continue
			}
			ok := slices.ContainsFunc(s.c.Services[m.Name].DependsOn, func(d dependency) bool {
				return d.Service == primary && d.Condition == "service_healthy"
			})
			if !ok {
				p.add("services.%s: must depend on %s (service_healthy) so the inventory primary %s bootstraps the cluster", m.Name, primary, primary)
			}
		}
	}
	return p.err()
}

func checkEtcdEndpoints(s *stack) error {
	cfg, cfgHost, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	var p problems
	for i, e := range cfg.Etcd.Endpoints {
		u, _ := url.Parse(e) // Validate checked it
		name, ok := s.resolve(u.Hostname())
		if !ok {
			p.add("%s: etcd.endpoints[%d] %s: host is no service of %s", s.rel(cfgHost), i, e, s.rel(s.file))
			continue
		}
		port, err := s.etcdClientPort(name)
		if err != nil {
			p.add("%s: etcd.endpoints[%d] %s: %w", s.rel(cfgHost), i, e, err)
			continue
		}
		if u.Port() != port {
			p.add("%s: etcd.endpoints[%d] %s: services.%s serves clients on port %s", s.rel(cfgHost), i, e, name, port)
		}
	}
	return p.err()
}

func checkDataplaneAPI(s *stack) error {
	cfg, cfgHost, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	var p problems
	for i, d := range cfg.DataPlaneAPI {
		where := fmt.Sprintf("%s: dataplaneapi[%d]", s.rel(cfgHost), i)
		h, err := s.haproxyOf(d.URL)
		if err != nil {
			p.add("%s: %w", where, err)
			continue
		}
		u, _ := url.Parse(d.URL)
		api := h.api
		if strconv.Itoa(api.DataPlaneAPI.Port) != u.Port() {
			p.add("%s: port %s, but %s listens on %d", where, u.Port(), s.rel(h.apiFile), api.DataPlaneAPI.Port)
		}
		if host := api.DataPlaneAPI.Host; host != "0.0.0.0" && host != "" && host != "::" {
			p.add("%s: dataplaneapi.host %q is unreachable from the controller container", s.rel(h.apiFile), host)
		}
		pw, _ := u.User.Password()
		if !slices.ContainsFunc(api.DataPlaneAPI.User, func(x struct {
			Name     string `yaml:"name"`
			Password string `yaml:"password"`
			Insecure bool   `yaml:"insecure"`
		}) bool {
			return x.Name == u.User.Username() && x.Password == pw && x.Insecure
		}) {
			p.add("%s: user %q and its password are not a user of %s", where, u.User.Username(), s.rel(h.apiFile))
		}
		if api.ConfigVersion != 2 {
			p.add("%s: config_version %d, want 2", s.rel(h.apiFile), api.ConfigVersion)
		}
		r := api.HAProxy.Reload
		if r.ReloadStrategy != "custom" {
			p.add("%s: haproxy.reload.reload_strategy %q: HAProxy 2.6 needs custom (a script that dumps server state, then reloads)", s.rel(h.apiFile), r.ReloadStrategy)
		}
		if r.ReloadCmd == "" || r.RestartCmd == "" {
			p.add("%s: reload_strategy custom needs both reload_cmd and restart_cmd", s.rel(h.apiFile))
		}
		if r.RestartCmd != r.ReloadCmd {
			p.add("%s: restart_cmd %q differs from reload_cmd %q: both must dump server state first", s.rel(h.apiFile), r.RestartCmd, r.ReloadCmd)
		}
		if api.HAProxy.MasterRuntime != "" {
			p.add("%s: haproxy.master_runtime is set: with HAProxy 2.6 runtime server reads then fail", s.rel(h.apiFile))
		}
	}
	return p.err()
}

// haproxyGlobals reads the settings of haproxy.cfg the reload hazard depends on.
type haproxyGlobals struct {
	statsSocket, stateFile  string
	masterWorker, loadState bool
}

func readHAProxyCfg(file string) (haproxyGlobals, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return haproxyGlobals{}, fmt.Errorf("read haproxy config: %w", err)
	}
	var g haproxyGlobals
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			section = f[0]
			continue
		}
		switch {
		case section == "global" && len(f) >= 3 && f[0] == "stats" && f[1] == "socket" && slices.Contains(f, "admin") && g.statsSocket == "":
			g.statsSocket = f[2]
		case section == "global" && f[0] == "server-state-file" && len(f) == 2:
			g.stateFile = f[1]
		case section == "global" && f[0] == "master-worker":
			g.masterWorker = true
		case section == "defaults" && len(f) == 2 && f[0] == "load-server-state-from-file" && f[1] == "global":
			g.loadState = true
		}
	}
	return g, nil
}

// withoutComments drops the comment lines of a shell script, so checks look
// at what it runs rather than what it says.
func withoutComments(script string) string {
	var b strings.Builder
	for _, line := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteString("\n")
		}
	}
	return b.String()
}

var masterSocketFlag = regexp.MustCompile(`-S\s+"?([^\s",]+)`)

func checkReloadHazard(s *stack) error {
	cfg, _, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	var p problems
	for _, d := range cfg.DataPlaneAPI {
		h, err := s.haproxyOf(d.URL)
		if err != nil {
			return err
		}
		g, err := readHAProxyCfg(h.cfgFile)
		if err != nil {
			return err
		}
		hc := s.rel(h.cfgFile)
		if g.statsSocket == "" {
			p.add("%s: global has no `stats socket ... level admin` (the API's runtime calls and the state dump need it)", hc)
		}
		if g.stateFile == "" || !strings.HasPrefix(g.stateFile, "/") {
			p.add("%s: global needs `server-state-file /absolute/path`", hc)
		}
		if !g.loadState {
			p.add("%s: defaults needs `load-server-state-from-file global`", hc)
		}
		if !g.masterWorker {
			p.add("%s: global needs master-worker (the reload script reloads through the master socket)", hc)
		}
		entry, err := os.ReadFile(h.entry)
		if err != nil {
			return fmt.Errorf("read entrypoint: %w", err)
		}
		m := masterSocketFlag.FindSubmatch([]byte(withoutComments(string(entry))))
		if m == nil {
			p.add("%s: starts haproxy without -S <master socket>", s.rel(h.entry))
		}
		script, err := os.ReadFile(h.reload)
		if err != nil {
			return fmt.Errorf("read reload script: %w", err)
		}
		text := withoutComments(string(script))
		rs := s.rel(h.reload)
		for what, want := range map[string]string{"stats socket": g.statsSocket, "server-state-file": g.stateFile} {
			if want != "" && !strings.Contains(text, want) {
				p.add("%s: does not use %s %s of %s", rs, what, want, hc)
			}
		}
		if m != nil && !strings.Contains(text, string(m[1])) {
			p.add("%s: does not use the master socket %s that %s gives haproxy", rs, m[1], s.rel(h.entry))
		}
		dump, reload := strings.Index(text, `"show servers state"`), strings.LastIndex(text, `"reload"`)
		switch {
		case dump < 0:
			p.add("%s: never dumps `show servers state`", rs)
		case reload < 0:
			p.add("%s: never sends \"reload\" to the master socket", rs)
		case reload < dump:
			p.add("%s: reloads before dumping the server state", rs)
		}
	}
	return p.err()
}

func checkHAProxyCfgValid(s *stack) error {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return errSkip{"haproxy is not installed here; CI installs it (scripts/install-deps.sh) and runs this check"}
	}
	cfg, _, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	var p problems
	for _, d := range cfg.DataPlaneAPI {
		h, err := s.haproxyOf(d.URL)
		if err != nil {
			return err
		}
		out, err := exec.Command(bin, "-c", "-f", h.cfgFile).CombinedOutput()
		if err != nil {
			p.add("haproxy -c -f %s: %w\n%s", s.rel(h.cfgFile), err, out)
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			// The state file exists in the image (entrypoint.sh), not here.
			if strings.Contains(line, "[WARNING]") && !strings.Contains(line, "server state file") {
				p.add("haproxy -c -f %s: %s", s.rel(h.cfgFile), strings.TrimSpace(line))
			}
		}
	}
	return p.err()
}

// patroniFile is the part of a Patroni config the stack relies on.
type patroniFile struct {
	Scope     string `yaml:"scope"`
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	Etcd3     *struct {
		Hosts    stringList `yaml:"hosts"`
		Protocol string     `yaml:"protocol"`
	} `yaml:"etcd3"`
	RestAPI *struct {
		Listen         string `yaml:"listen"`
		ConnectAddress string `yaml:"connect_address"`
	} `yaml:"restapi"`
	Bootstrap struct {
		PostBootstrap string `yaml:"post_bootstrap"`
	} `yaml:"bootstrap"`
	PostgreSQL *struct {
		Listen         string `yaml:"listen"`
		ConnectAddress string `yaml:"connect_address"`
		DataDir        string `yaml:"data_dir"`
		BinDir         string `yaml:"bin_dir"`
		Authentication map[string]struct {
			Username string `yaml:"username"`
			Password string `yaml:"password"`
		} `yaml:"authentication"`
	} `yaml:"postgresql"`
}

func portOf(hostport string) string {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return ""
	}
	return p
}

func checkPatroni(s *stack) error {
	inv, err := s.inventory()
	if err != nil {
		return err
	}
	var p problems
	members := 0
	for _, c := range inv.Clusters {
		for _, m := range c.Members {
			if s.c.Services[m.Name] == nil {
				continue // checkInventory reports it
			}
			file, err := s.bindSource(m.Name, patroniConfigPath)
			if err != nil {
				p.add("%w", err)
				continue
			}
			members++
			f := s.rel(file)
			var pc patroniFile
			if err := decodeFile(file, &pc, false); err != nil {
				p.add("%w", err)
				continue
			}
			if pc.Scope != c.Name {
				p.add("%s: scope %q, want the cluster name %q", f, pc.Scope, c.Name)
			}
			if pc.Namespace != c.Namespace+"/" {
				p.add("%s: namespace %q, want %q (the inventory's pg_namespace, which the controller watches)", f, pc.Namespace, c.Namespace+"/")
			}
			if pc.Name != m.Name {
				p.add("%s: name %q, want %q (the inventory member and compose service)", f, pc.Name, m.Name)
			}
			ip := s.ipOf(m.Name)
			if pc.Etcd3 == nil || len(pc.Etcd3.Hosts) == 0 {
				p.add("%s: etcd3.hosts missing (Patroni must use the etcd v3 API)", f)
			} else {
				for _, hs := range pc.Etcd3.Hosts {
					for _, hp := range strings.Split(hs, ",") {
						host, port, err := net.SplitHostPort(strings.TrimSpace(hp))
						name, ok := s.resolve(host)
						if err != nil || !ok {
							p.add("%s: etcd3.hosts %q is no service of %s", f, hp, s.rel(s.file))
							continue
						}
						if want, err := s.etcdClientPort(name); err != nil || want != port {
							p.add("%s: etcd3.hosts %q: %s serves clients on %q (%v)", f, hp, name, want, err)
						}
					}
				}
			}
			wantAPI := net.JoinHostPort(ip, strconv.Itoa(m.PatroniPort))
			if pc.RestAPI == nil || pc.RestAPI.Listen == "" {
				p.add("%s: restapi.listen missing", f)
			} else {
				if pc.RestAPI.ConnectAddress != wantAPI {
					p.add("%s: restapi.connect_address %q, want %s (service address, inventory patroni_port)", f, pc.RestAPI.ConnectAddress, wantAPI)
				}
				if portOf(pc.RestAPI.Listen) != strconv.Itoa(m.PatroniPort) {
					p.add("%s: restapi.listen %q is not on patroni_port %d (HAProxy checks it)", f, pc.RestAPI.Listen, m.PatroniPort)
				}
			}
			wantPG := net.JoinHostPort(ip, strconv.Itoa(m.PgPort))
			if pc.PostgreSQL == nil {
				p.add("%s: postgresql section missing", f)
				continue
			}
			pg := pc.PostgreSQL
			if pg.ConnectAddress != wantPG {
				p.add("%s: postgresql.connect_address %q, want %s", f, pg.ConnectAddress, wantPG)
			}
			if portOf(pg.Listen) != strconv.Itoa(m.PgPort) {
				p.add("%s: postgresql.listen %q is not on pg_port %d", f, pg.Listen, m.PgPort)
			}
			if pg.DataDir == "" || pg.BinDir == "" {
				p.add("%s: postgresql.data_dir and bin_dir are required", f)
			}
			for _, role := range []string{"superuser", "replication"} {
				if a := pg.Authentication[role]; a.Username == "" || a.Password == "" {
					p.add("%s: postgresql.authentication.%s needs username and password", f, role)
				}
			}
			if pb := pc.Bootstrap.PostBootstrap; pb != "" {
				if _, err := s.installedFile(m.Name, pb); err != nil {
					p.add("%s: bootstrap.post_bootstrap: %w", f, err)
				}
			}
		}
	}
	if members == 0 {
		p.add("no member service mounts a Patroni config at %s", patroniConfigPath)
	}
	return p.err()
}

// iniValues reads key = value pairs of one section of an ini file.
func iniValues(file, section string) (map[string]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read ini: %w", err)
	}
	out, cur := map[string]string{}, ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[]")
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && cur == section {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

func checkPgbouncer(s *stack) error {
	inv, err := s.inventory()
	if err != nil {
		return err
	}
	var p problems
	for _, c := range inv.Clusters {
		var users []string
		if l, ok := c.Vars["pg_users"].([]any); ok {
			for _, u := range l {
				if m, ok := u.(map[string]any); ok {
					if n, ok := m["name"].(string); ok {
						users = append(users, n)
					}
				}
			}
		}
		for _, m := range c.Members {
			if s.c.Services[m.Name] == nil {
				continue
			}
			ini, err := s.installedFile(m.Name, pgbouncerConfPath)
			if err != nil {
				p.add("services.%s: %w", m.Name, err)
				continue
			}
			v, err := iniValues(ini, "pgbouncer")
			if err != nil {
				return err
			}
			if v["listen_port"] != strconv.Itoa(m.PgbouncerPort) {
				p.add("%s: listen_port %q, but the inventory serves %s's pgbouncer on %d", s.rel(ini), v["listen_port"], m.Name, m.PgbouncerPort)
			}
			if a := v["listen_addr"]; a != "0.0.0.0" && a != "*" && a != s.ipOf(m.Name) {
				p.add("%s: listen_addr %q is unreachable from the haproxy container", s.rel(ini), a)
			}
			list, err := s.installedFile(m.Name, v["auth_file"])
			if err != nil {
				p.add("%s: auth_file: %w", s.rel(ini), err)
				continue
			}
			data, err := os.ReadFile(list)
			if err != nil {
				return fmt.Errorf("read userlist: %w", err)
			}
			for _, u := range users {
				if !strings.Contains(string(data), strconv.Quote(u)+" ") {
					p.add("%s: pg_users %q of %s is missing (pgbouncer would refuse it)", s.rel(list), u, c.Name)
				}
			}
		}
	}
	return p.err()
}

func checkServicePortsPublished(s *stack) error {
	cfg, _, _, err := s.controllerFiles()
	if err != nil {
		return err
	}
	inv, err := s.inventory()
	if err != nil {
		return err
	}
	var p problems
	for _, d := range cfg.DataPlaneAPI {
		h, err := s.haproxyOf(d.URL)
		if err != nil {
			return err
		}
		want := map[string]string{}
		for _, c := range inv.Clusters {
			if len(d.Clusters) > 0 && !slices.Contains(d.Clusters, c.Name) {
				continue
			}
			for _, sd := range c.Services {
				want[strconv.Itoa(sd.Port)] = c.Name + "-" + sd.Name
			}
		}
		got := map[string]bool{}
		for _, pt := range s.c.Services[h.service].Ports {
			got[pt.Target] = true
			if want[pt.Target] == "" {
				p.add("services.%s.ports %q: no inventory service uses container port %s", h.service, pt.Raw, pt.Target)
			}
			if pt.Published != pt.Target {
				p.add("services.%s.ports %q: publish services on their own port number", h.service, pt.Raw)
			}
		}
		for port, svc := range want {
			if !got[port] {
				p.add("services.%s: service %s binds port %s, which is not published", h.service, svc, port)
			}
		}
	}
	return p.err()
}

// checks are the static checks of the stack, by name.
var checks = []struct {
	name string
	fn   func(*stack) error
}{
	{"build contexts and dockerfiles exist", checkBuilds},
	{"COPY and ADD sources exist in their context", checkCopySources},
	{"bind mounts exist and named volumes are declared", checkMounts},
	{"depends_on names defined services", checkDependsOn},
	{"env files exist", checkEnvFiles},
	{"published ports bind 127.0.0.1 and do not collide", checkPublishedPorts},
	{"static addresses are unique and inside the subnet", checkNetwork},
	{"controller config loads, validates and is published", checkControllerConfig},
	{"inventory loads and names compose services", checkInventory},
	{"inventory primary starts first", checkPrimaryStartsFirst},
	{"etcd endpoints are the etcd service", checkEtcdEndpoints},
	{"dataplaneapi URL matches dataplaneapi.yml", checkDataplaneAPI},
	{"server state survives reloads", checkReloadHazard},
	{"haproxy.cfg passes haproxy -c", checkHAProxyCfgValid},
	{"patroni configs match compose and inventory", checkPatroni},
	{"pgbouncer matches the inventory", checkPgbouncer},
	{"inventory service ports are published", checkServicePortsPublished},
}

// TestStack runs every static check on the shipped docker-compose.yml.
func TestStack(t *testing.T) {
	s := loadStack(t)
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			err := c.fn(s)
			var skip errSkip
			if errors.As(err, &skip) {
				t.Skip(skip.reason)
			}
			if err != nil {
				t.Errorf("%v", err)
			}
		})
	}
}
