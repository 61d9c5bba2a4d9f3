package docker

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestParsers covers the small readers the stack checks rely on, so a check
// that passes does so because the file is right, not because a reader
// silently read nothing.
func TestParsers(t *testing.T) {
	dockerfile := "# syntax=docker/dockerfile:1\nFROM golang:1.22 AS build\n" +
		"RUN set -eux; \\\n    # a comment inside a continuation\n    go version\n" +
		"COPY --chown=1:1 a.txt b.txt /etc/x/\nCOPY [\"c d.txt\", \"/opt/e\"]\n" +
		"COPY --from=build /out/bin /usr/local/bin/bin\n"
	cases := []struct {
		name string
		run  func(t *testing.T) any
		want any
	}{
		{"port with host address", func(t *testing.T) any {
			p, err := parsePort("127.0.0.1:5433:5433")
			must(t, err)
			return [3]string{p.HostIP, p.Published, p.Target}
		}, [3]string{"127.0.0.1", "5433", "5433"}},
		{"port without host address", func(t *testing.T) any {
			p, err := parsePort("9876:9876/tcp")
			must(t, err)
			return [3]string{p.HostIP, p.Published, p.Protocol}
		}, [3]string{"", "9876", "tcp"}},
		{"container port only", func(t *testing.T) any {
			p, err := parsePort("5555")
			must(t, err)
			return [2]string{p.Published, p.Target}
		}, [2]string{"", "5555"}},
		{"port range rejected", func(t *testing.T) any { _, err := parsePort("5000-5010:5000-5010"); return err != nil }, true},
		{"ignore: star then re-include keeps the directory", func(t *testing.T) any {
			r, err := parseIgnore("*\n!pkg\n**/testdata\n**/*_test.go\n")
			must(t, err)
			return []bool{ignored(r, "pkg/a/b.go"), ignored(r, "bin/controller"), ignored(r, "pkg/a/testdata/x.json"), ignored(r, "pkg/a/b_test.go"), ignored(r, "go.mod")}
		}, []bool{false, true, true, true, true}},
		{"ignore: no rules keeps everything", func(t *testing.T) any { return ignored(nil, "anything/at/all") }, false},
		{"dockerfile: continuations and comments", func(t *testing.T) any {
			ins := parseString(t, dockerfile)
			var cmds []string
			for _, in := range ins {
				cmds = append(cmds, in.Cmd)
			}
			return strings.Join(cmds, " ") + " | " + ins[1].Args
		}, "FROM RUN COPY COPY COPY | set -eux;      go version"},
		{"dockerfile: COPY destinations", func(t *testing.T) any {
			ins := parseString(t, dockerfile)
			cps, err := copies("Dockerfile", ins)
			must(t, err)
			return installed(cps, "/ctx")
		}, map[string]string{"/etc/x/a.txt": "/ctx/a.txt", "/etc/x/b.txt": "/ctx/b.txt", "/opt/e": "/ctx/c d.txt"}},
		{"compose: misspelt key rejected", func(t *testing.T) any {
			f := filepath.Join(t.TempDir(), "c.yml")
			must(t, os.WriteFile(f, []byte("services:\n  a:\n    image: x\n    depend_on: [b]\n"), 0o644))
			_, err := loadCompose(f)
			return err != nil && strings.Contains(err.Error(), "depend_on")
		}, true},
		{"compose: short and long forms", func(t *testing.T) any {
			f := filepath.Join(t.TempDir(), "c.yml")
			must(t, os.WriteFile(f, []byte("services:\n  a:\n    build: ./a\n    depends_on: [b]\n    volumes: ['./x:/y:ro', 'v:/z']\n    env_file: e.env\n  b:\n    image: y\n    depends_on: {a: {condition: service_healthy}}\n"), 0o644))
			c, err := loadCompose(f)
			must(t, err)
			a := c.Services["a"]
			return []any{a.Build.Context, a.Build.dockerfile(), a.DependsOn[0].Condition, a.Volumes[0].Type, a.Volumes[0].ReadOnly, a.Volumes[1].Type, []string(a.EnvFile), c.Services["b"].DependsOn[0].Condition}
		}, []any{"./a", "Dockerfile", "service_started", "bind", true, "volume", []string{"e.env"}, "service_healthy"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.run(t); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v\nwant %#v", got, c.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func parseString(t *testing.T, text string) []instruction {
	t.Helper()
	f := filepath.Join(t.TempDir(), "Dockerfile")
	must(t, os.WriteFile(f, []byte(text), 0o644))
	ins, err := parseDockerfile(f)
	must(t, err)
	return ins
}
