package docker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, COPY, ...
	Args string
	Line int
}

// parseDockerfile reads the instructions of a Dockerfile: comments and blank
// lines dropped, backslash continuations joined (the default escape
// character; a comment line inside a continuation is skipped as BuildKit does).
func parseDockerfile(file string) ([]instruction, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open dockerfile: %w", err)
	}
	defer f.Close()
	var (
		out   []instruction
		cur   strings.Builder
		start int
		n     int
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t\r")
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "#") || (trim == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			continue
		}
		cmd, args, _ := strings.Cut(text, " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("%s:%d: line continuation at end of file", file, start)
	}
	return out, nil
}

// copyInstr is a COPY or ADD, its flags split from its paths.
type copyInstr struct {
	instruction
	From    string // --from=stage: sources come from another stage or image
	Sources []string
	Dest    string
}

// copies returns the COPY/ADD instructions of a Dockerfile.
func copies(file string, ins []instruction) ([]copyInstr, error) {
	var out []copyInstr
	for _, in := range ins {
		if in.Cmd != "COPY" && in.Cmd != "ADD" {
			continue
		}
		c := copyInstr{instruction: in}
		rest := in.Args
		for strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			if v, ok := strings.CutPrefix(flag, "--from="); ok {
				c.From = v
			}
			rest = strings.TrimSpace(after)
		}
		var paths []string
		if strings.HasPrefix(rest, "[") {
			if err := json.Unmarshal([]byte(rest), &paths); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: bad JSON form: %w", file, in.Line, in.Cmd, err)
			}
		} else {
			paths = strings.Fields(rest)
		}
		if len(paths) < 2 {
			return nil, fmt.Errorf("%s:%d: %s needs at least a source and a destination", file, in.Line, in.Cmd)
		}
		c.Sources, c.Dest = paths[:len(paths)-1], paths[len(paths)-1]
		out = append(out, c)
	}
	return out, nil
}

// installed maps container paths to the context files COPY puts there (only
// file sources from the build context, which is what the checks need).
func installed(cs []copyInstr, context string) map[string]string {
	m := map[string]string{}
	for _, c := range cs {
		if c.From != "" {
			continue
		}
		multi := len(c.Sources) > 1 || strings.HasSuffix(c.Dest, "/")
		for _, src := range c.Sources {
			dst := c.Dest
			if multi {
				dst = path.Join(c.Dest, path.Base(src))
			}
			m[dst] = filepath.Join(context, filepath.FromSlash(src))
		}
	}
	return m
}

// ignoreRule is one line of a .dockerignore file.
type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
	text   string
}

// loadIgnore reads the ignore file BuildKit uses for a build: the
// Dockerfile-specific <Dockerfile>.dockerignore if present, else
// <context>/.dockerignore; none at all is no rule.
func loadIgnore(context, dockerfile string) ([]ignoreRule, string, error) {
	for _, f := range []string{dockerfile + ".dockerignore", filepath.Join(context, ".dockerignore")} {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("read ignore file: %w", err)
		}
		rules, err := parseIgnore(string(data))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", f, err)
		}
		return rules, f, nil
	}
	return nil, "", nil
}

// parseIgnore compiles .dockerignore patterns the way Docker's pattern
// matcher reads them: paths cleaned, leading "/" dropped, "**" any number of
// directories, "*" and "?" within one path element, "!" re-includes.
func parseIgnore(text string) ([]ignoreRule, error) {
	var rules []ignoreRule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{text: line}
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, strings.TrimSpace(line[1:])
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch ch := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				b.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				b.WriteString(".*")
				i++
			case ch == '*':
				b.WriteString("[^/]*")
			case ch == '?':
				b.WriteString("[^/]")
			default:
				b.WriteString(regexp.QuoteMeta(string(ch)))
			}
		}
		b.WriteString("$")
		re, err := regexp.Compile(b.String())
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", r.text, err)
		}
		r.re = re
		rules = append(rules, r)
	}
	return rules, nil
}

// ignored says whether a context-relative slash path is left out of the
// build context: the last rule matching the path or one of its parents wins.
func ignored(rules []ignoreRule, rel string) bool {
	rel = strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(rel)), "/")
	var parents []string
	for p := rel; p != "." && p != ""; p = path.Dir(p) {
		parents = append(parents, p)
		if !strings.Contains(p, "/") {
			break
		}
	}
	out := false
	for _, r := range rules {
		for _, p := range parents {
			if r.re.MatchString(p) {
				out = !r.negate
				break
			}
		}
	}
	return out
}
