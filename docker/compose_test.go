package docker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of the Compose specification docker-compose.yml
// uses. Decoding is strict so a misspelt key (depend_on) is an error rather
// than a silently ignored setting.
type composeFile struct {
	Name     string                `yaml:"name"`
	Services map[string]*service   `yaml:"services"`
	Networks map[string]*network   `yaml:"networks"`
	Volumes  map[string]*yaml.Node `yaml:"volumes"`
}

type service struct {
	Image           string                     `yaml:"image"`
	Build           *build                     `yaml:"build"`
	Hostname        string                     `yaml:"hostname"`
	ContainerName   string                     `yaml:"container_name"`
	Init            bool                       `yaml:"init"`
	Command         stringList                 `yaml:"command"`
	Entrypoint      stringList                 `yaml:"entrypoint"`
	DependsOn       dependsOn                  `yaml:"depends_on"`
	Volumes         []mount                    `yaml:"volumes"`
	Ports           []port                     `yaml:"ports"`
	Expose          []string                   `yaml:"expose"`
	EnvFile         stringList                 `yaml:"env_file"`
	Environment     yaml.Node                  `yaml:"environment"`
	Healthcheck     *healthcheck               `yaml:"healthcheck"`
	StopGracePeriod string                     `yaml:"stop_grace_period"`
	StopSignal      string                     `yaml:"stop_signal"`
	Restart         string                     `yaml:"restart"`
	User            string                     `yaml:"user"`
	WorkingDir      string                     `yaml:"working_dir"`
	Labels          map[string]string          `yaml:"labels"`
	PullPolicy      string                     `yaml:"pull_policy"`
	Networks        map[string]*serviceNetwork `yaml:"networks"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
	Args       map[string]string
}

// UnmarshalYAML accepts the short form (build: ./dir) and the long form.
func (b *build) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Target     string            `yaml:"target"`
		Args       map[string]string `yaml:"args"`
	}
	var p plain
	if err := strictDecode(n, &p); err != nil {
		return err
	}
	*b = build{Context: p.Context, Dockerfile: p.Dockerfile, Target: p.Target, Args: p.Args}
	return nil
}

// dockerfile is the Dockerfile path as Compose resolves it: relative to the
// context, "Dockerfile" when unset.
func (b *build) dockerfile() string {
	if b.Dockerfile == "" {
		return "Dockerfile"
	}
	return b.Dockerfile
}

type healthcheck struct {
	Test          stringList `yaml:"test"`
	Interval      string     `yaml:"interval"`
	Timeout       string     `yaml:"timeout"`
	Retries       int        `yaml:"retries"`
	StartPeriod   string     `yaml:"start_period"`
	StartInterval string     `yaml:"start_interval"`
	Disable       bool       `yaml:"disable"`
}

type network struct {
	Driver   string `yaml:"driver"`
	External bool   `yaml:"external"`
	Internal bool   `yaml:"internal"`
	IPAM     *struct {
		Driver string `yaml:"driver"`
		Config []struct {
			Subnet  string `yaml:"subnet"`
			Gateway string `yaml:"gateway"`
			IPRange string `yaml:"ip_range"`
		} `yaml:"config"`
	} `yaml:"ipam"`
}

type serviceNetwork struct {
	IPv4Address string   `yaml:"ipv4_address"`
	Aliases     []string `yaml:"aliases"`
}

// stringList is a string or a list of strings (command, env_file, test).
type stringList []string

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = stringList{n.Value}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*s = l
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

// dependency is one depends_on entry.
type dependency struct {
	Service   string
	Condition string // service_started when the short form is used
	Line      int
}

type dependsOn []dependency

// UnmarshalYAML accepts the list form and the map form with conditions.
func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: depends_on entry must be a service name", e.Line)
			}
			*d = append(*d, dependency{Service: e.Value, Condition: "service_started", Line: e.Line})
		}
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			var c struct {
				Condition string `yaml:"condition"`
				Restart   bool   `yaml:"restart"`
				Required  *bool  `yaml:"required"`
			}
			if err := strictDecode(v, &c); err != nil {
				return fmt.Errorf("depends_on.%s: %w", k.Value, err)
			}
			if c.Condition == "" {
				c.Condition = "service_started"
			}
			*d = append(*d, dependency{Service: k.Value, Condition: c.Condition, Line: k.Line})
		}
		return nil
	}
	return fmt.Errorf("line %d: depends_on must be a list or a map", n.Line)
}

// mount is one volumes entry of a service.
type mount struct {
	Type     string // bind or volume
	Source   string
	Target   string
	ReadOnly bool
	Line     int
}

// UnmarshalYAML accepts "SRC:DST[:MODE]" and the long form.
func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	m.Line = n.Line
	if n.Kind == yaml.ScalarNode {
		parts := strings.Split(n.Value, ":")
		switch len(parts) {
		case 1:
			m.Type, m.Target = "volume", parts[0] // anonymous volume
			return nil
		case 2, 3:
			m.Source, m.Target = parts[0], parts[1]
			if len(parts) == 3 {
				for _, o := range strings.Split(parts[2], ",") {
					if o == "ro" {
						m.ReadOnly = true
					}
				}
			}
		default:
			return fmt.Errorf("line %d: volume %q is not SRC:DST[:MODE]", n.Line, n.Value)
		}
		m.Type = "volume"
		if strings.HasPrefix(m.Source, ".") || strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, "~") {
			m.Type = "bind"
		}
		return nil
	}
	var l struct {
		Type     string `yaml:"type"`
		Source   string `yaml:"source"`
		Target   string `yaml:"target"`
		ReadOnly bool   `yaml:"read_only"`
	}
	if err := strictDecode(n, &l); err != nil {
		return err
	}
	m.Type, m.Source, m.Target, m.ReadOnly = l.Type, l.Source, l.Target, l.ReadOnly
	return nil
}

// port is one published port.
type port struct {
	HostIP    string // "" means every address
	Published string // "" means an ephemeral port
	Target    string
	Protocol  string
	Raw       string
	Line      int
}

// UnmarshalYAML accepts "[IP:]HOST:CONTAINER[/PROTO]", "CONTAINER" and the
// long form.
func (p *port) UnmarshalYAML(n *yaml.Node) error {
	p.Line = n.Line
	if n.Kind == yaml.ScalarNode {
		p.Raw = n.Value
		parsed, err := parsePort(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		parsed.Line = n.Line
		*p = parsed
		return nil
	}
	var l struct {
		Target    int    `yaml:"target"`
		Published string `yaml:"published"`
		HostIP    string `yaml:"host_ip"`
		Protocol  string `yaml:"protocol"`
		Mode      string `yaml:"mode"`
		Name      string `yaml:"name"`
	}
	if err := strictDecode(n, &l); err != nil {
		return err
	}
	*p = port{HostIP: l.HostIP, Published: l.Published, Target: strconv.Itoa(l.Target), Protocol: l.Protocol, Line: n.Line}
	if p.Protocol == "" {
		p.Protocol = "tcp"
	}
	p.Raw = fmt.Sprintf("%s:%s:%s/%s", p.HostIP, p.Published, p.Target, p.Protocol)
	return nil
}

// parsePort parses the short port syntax (IPv4 host addresses only, which
// is all this stack uses).
func parsePort(s string) (port, error) {
	p := port{Raw: s, Protocol: "tcp"}
	spec := s
	if i := strings.LastIndex(spec, "/"); i >= 0 {
		p.Protocol, spec = spec[i+1:], spec[:i]
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		p.Target = parts[0]
	case 2:
		p.Published, p.Target = parts[0], parts[1]
	case 3:
		p.HostIP, p.Published, p.Target = parts[0], parts[1], parts[2]
	default:
		return port{}, fmt.Errorf("port %q is not [IP:]HOST:CONTAINER", s)
	}
	for _, v := range []string{p.Published, p.Target} {
		if v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			return port{}, fmt.Errorf("port %q: %q is not a port number (ranges are not used here)", s, v)
		}
	}
	if p.Target == "" {
		return port{}, fmt.Errorf("port %q has no container port", s)
	}
	return p, nil
}

// strictDecode decodes n into v, rejecting unknown keys.
func strictDecode(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// loadCompose strictly decodes a compose file.
func loadCompose(path string) (*composeFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read compose file: %w", err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("%s: no services", path)
	}
	for name, s := range c.Services {
		if s == nil {
			return nil, fmt.Errorf("%s: services.%s is empty", path, name)
		}
	}
	return &c, nil
}
