package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestTemplateAccepted(t *testing.T) {
	c, err := Parse("controller.yml", []byte(`
inventory: /etc/pgsvc/pigsty.yml
dataplaneapi:
  - url: http://admin@{host}:5555
    password_file: /etc/pgsvc/dataplaneapi.pass
  - url: https://{host}:5556
    clusters: [pg-test]
  - url: http://admin@10.10.10.99:5555
`))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := c.DataPlaneAPI
	if !d[0].IsTemplate() || !d[1].IsTemplate() || d[2].IsTemplate() {
		t.Errorf("IsTemplate: %v %v %v", d[0].IsTemplate(), d[1].IsTemplate(), d[2].IsTemplate())
	}
	for host, want := range map[string]string{
		"10.10.10.11": "http://admin@10.10.10.11:5555",
		"fd00::11":    "http://admin@[fd00::11]:5555",
		"node-1":      "http://admin@node-1:5555",
	} {
		if got := d[0].ExpandURL(host); got != want {
			t.Errorf("ExpandURL(%s) = %s, want %s", host, got, want)
		}
	}
}

// TestTemplateRejected: a bad URL template is rejected naming the file, the
// field, what is wrong, and never the password.
func TestTemplateRejected(t *testing.T) {
	cases := map[string]string{
		"unknown-placeholder.yml": `"http://admin:xxxxx@{hots}:5555": unknown placeholder {hots} (the only one is {host})`,
		"host-in-path.yml":        "{host} is the host part, once",
		"host-in-user.yml":        "{host} is the host part, once",
		"no-scheme.yml":           "want an http(s)://",
		"twice.yml":               "{host} is the host part, once",
		"unbalanced.yml":          "unbalanced brace",
	}
	files, _ := filepath.Glob("testdata/bad-template/*.yml")
	if len(files) != len(cases) {
		t.Fatalf("%d files in testdata/bad-template, %d cases: every rejected case needs both", len(files), len(cases))
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata/bad-template", name)
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			c.ApplyDefaults()
			err = c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), path+": dataplaneapi[1].url: ") || !strings.Contains(err.Error(), want) {
				t.Errorf("error %q: want %q, the field dataplaneapi[1].url and %q", err, path, want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

// TestExampleConfigValid: the documented example (config/controller.yml,
// with its {host} template) is a valid configuration.
func TestExampleConfigValid(t *testing.T) {
	c, err := Load("../../config/controller.yml")
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.DataPlaneAPI) == 0 || !c.DataPlaneAPI[0].IsTemplate() {
		t.Errorf("the example's first dataplaneapi entry is not the {host} template: %+v", c.DataPlaneAPI)
	}
}
