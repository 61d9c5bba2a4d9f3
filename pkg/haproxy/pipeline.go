package haproxy

import (
	"go.uber.org/zap"

	"bufio"
	"context"
	"fmt"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Pipeline sends cmds over one stats-socket connection in `prompt` mode, all
// written before any answer is read (HAProxy runs them in order), and returns
// one answer per command. 6,000 `set server` commands take ~50 ms this way
// instead of one connection each.
func (r *Runtime) Pipeline(ctx context.Context, cmds []string) ([]string, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	for _, c := range cmds {
		if strings.ContainsAny(c, "\n\r") {
			return nil, fmt.Errorf("command %q: contains a newline", c)
		}
	}
	if r.beforePipeline != nil {
		r.beforePipeline(cmds)
	}
	ctx, cancel, err := r.commandContext(ctx, cmds...)
	if err != nil {
		return nil, fmt.Errorf("haproxy socket %s: %w", r.Socket, err)
	}
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", r.Socket)
	if err != nil {
		return nil, fmt.Errorf("haproxy socket %s: %w", r.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// In prompt mode every answer ends with an empty line and the prompt
	// "> "; the first "prompt" itself answers with just the prompt.
	var b strings.Builder
	b.WriteString("prompt\n")
	for _, c := range cmds {
		b.WriteString(c)
		b.WriteByte('\n')
	}
	b.WriteString("quit\n")
	errc := make(chan error, 1)
	go func() {
		_, werr := io.WriteString(conn, b.String())
		errc <- werr
	}()
	br := bufio.NewReader(conn)
	// Skip the answer to "prompt": "\n> " or "> ".
	if err := skipPrompt(br); err != nil {
		return nil, fmt.Errorf("haproxy socket %s: prompt: %w", r.Socket, ctxErr(ctx, err))
	}
	out := make([]string, 0, len(cmds))
	for range cmds {
		ans, err := readAnswer(br)
		if err != nil {
			return out, fmt.Errorf("haproxy socket %s: answer %d of %d: %w", r.Socket, len(out)+1, len(cmds), ctxErr(ctx, err))
		}
		out = append(out, ans)
	}
	if werr := <-errc; werr != nil {
		return out, fmt.Errorf("haproxy socket %s: %w", r.Socket, ctxErr(ctx, werr))
	}
	return out, nil
}

func skipPrompt(br *bufio.Reader) error {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return err
		}
		if c == '>' {
			c2, err := br.ReadByte()
			if err != nil {
				return err
			}
			if c2 == ' ' {
				return nil
			}
		}
	}
}

// readAnswer reads one prompt-mode answer: text up to "\n> " (the answer's
// terminating empty line is dropped).
func readAnswer(br *bufio.Reader) (string, error) {
	var b strings.Builder
	partial := false // the last part read ended no line
	for {
		// (ReadSlice: the line is copied once, into b, not first into a
		// string of its own; a line longer than br's buffer comes in parts.)
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			b.Write(line)
			partial = true
			continue
		}
		if err != nil {
			return "", err
		}
		b.Write(line)
		blank := len(line) == 1 && !partial
		partial = false
		// The next prompt follows the blank line that ends the answer.
		if blank {
			p, err := br.Peek(2)
			if err == nil && string(p) == "> " {
				_, _ = br.Discard(2)
				return strings.TrimSuffix(b.String(), "\n"), nil
			}
		}
	}
}

// SetStates sets the admin state of many servers over one connection, in
// order; keys are "backend/server", states "ready", "drain" or "maint".
func (r *Runtime) SetStates(ctx context.Context, flips []Flip) error {
	cmds := make([]string, 0, len(flips))
	for _, f := range flips {
		switch f.State {
		case "ready", "maint", "drain":
		default:
			return fmt.Errorf("server %s/%s: state %q: want ready, maint or drain", f.Backend, f.Server, f.State)
		}
		cmds = append(cmds, "set server "+f.Backend+"/"+f.Server+" state "+f.State)
	}
	return r.PipelineQuiet(ctx, cmds)
}

// Weight is one server's user weight to set.
type Weight struct {
	Backend, Server string
	Weight          int
}

// SetWeights sets the user weight of many servers over one connection, in
// order (SetWeight for each, pipelined).
func (r *Runtime) SetWeights(ctx context.Context, weights []Weight) error {
	if len(weights) == 0 {
		return nil
	}
	cmds := make([]string, 0, len(weights))
	for _, w := range weights {
		if w.Weight < 0 || w.Weight > 256 {
			return fmt.Errorf("server %s/%s: weight %d out of range 0-256", w.Backend, w.Server, w.Weight)
		}
		cmds = append(cmds, "set server "+w.Backend+"/"+w.Server+" weight "+strconv.Itoa(w.Weight))
	}
	return r.PipelineQuiet(ctx, cmds)
}

// Flip is one server's admin state change.
type Flip struct {
	Backend, Server, State string
}

// Admin state bits of `show servers state` (srv_admin_state, decimal).
const (
	admFMaint = 0x01
	admIMaint = 0x02
	admCMaint = 0x04
	admFDrain = 0x08
	admIDrain = 0x10
	admRMaint = 0x20
	admHMaint = 0x40
	admCDrain = 0x80
)

// AdminWord is "maint", "drain" or "ready" for a srv_admin_state bitfield.
// The "config" bits (CMAINT: `disabled` in the file the process loaded;
// CDRAIN) only record the file: measured on HAProxy 2.6, a `disabled` server
// set `ready` at runtime runs with admin state 4 (CMAINT) and takes traffic.
func AdminWord(bits int) string {
	switch {
	case bits&(admFMaint|admIMaint|admRMaint|admHMaint) != 0:
		return "maint"
	case bits&(admFDrain|admIDrain) != 0:
		return "drain"
	}
	return "ready"
}

// flipsOf splits the set_state changes into activations and deactivations.
func flipsOf(changes []target.Change) (ups, downs []Flip) {
	for _, c := range changes {
		if c.Kind != target.KindSetState {
			continue
		}
		f := Flip{Backend: c.Backend, Server: c.Server, State: target.StateOf(c)}
		if f.State == "ready" {
			ups = append(ups, f)
		} else {
			downs = append(downs, f)
		}
	}
	return ups, downs
}

// verifyStates reads back the admin state of the twin servers of desired
// that changes touched and compares it with the desired one: every twin of
// the backends changes touch, or, flippedOnly, the servers changes flip
// (set_state) only; the servers skip flips are left out either way (their
// flips are read back by whoever makes them: another goroutine may not
// have made them yet). A mismatch (a command HAProxy ignored, a reload
// whose state file did not apply) is set again once, in the apply's order
// (fenceAndFlip: a write service's outgoing twins first, a fenced server
// readied forced DOWN right after its ready, then the other readies, then
// the other deactivations); if it still differs, the error names it
// (status and metrics report failed applies, and the next resync tries
// again).
func (d *Direct) verifyStates(ctx context.Context, desired []services.Service, changes []target.Change, flippedOnly bool, skip []target.Change) error {
	touched := map[string]bool{}
	var flipped map[[2]string]bool
	if flippedOnly {
		flipped = map[[2]string]bool{}
	}
	for _, c := range changes {
		touched[c.Backend] = true
		if flippedOnly && c.Kind == target.KindSetState {
			flipped[[2]string{c.Backend, c.Server}] = true
		}
	}
	skipped := map[[2]string]bool{}
	for _, c := range skip {
		if c.Kind == target.KindSetState {
			skipped[[2]string{c.Backend, c.Server}] = true
		}
	}
	want := map[string]string{}
	var backends []string
	for _, s := range desired {
		if s.Layout != services.LayoutTwins || !touched[s.Name] {
			continue
		}
		n := len(want)
		for _, sv := range s.Servers {
			if sv.Track != "" {
				continue // never flipped; its admin state includes its tracked server's (diffAdmin)
			}
			k := [2]string{s.Name, sv.Name}
			if skipped[k] || flippedOnly && !flipped[k] {
				continue
			}
			want[s.Name+"/"+sv.Name] = services.AdminWord(s, sv)
		}
		if len(want) > n {
			backends = append(backends, s.Name)
		}
	}
	if len(want) == 0 {
		return nil
	}
	var wrong []Flip
	for attempt := 0; ; attempt++ {
		// Only the backends touched: one pipelined `show servers state B`
		// each, not the whole running HAProxy.
		wrong = wrong[:0]
		err := d.serversState(ctx, backends, func(st StateServer) {
			w, ok := want[st.Backend+"/"+st.Server]
			if !ok {
				return
			}
			got := AdminWord(st.AdminSt)
			if (w == "ready") != (got == "ready") {
				wrong = append(wrong, Flip{Backend: st.Backend, Server: st.Server, State: w})
			}
		})
		if err != nil {
			return fmt.Errorf("verify admin states: %w", err)
		}
		if len(wrong) == 0 {
			if attempt > 0 {
				d.log.Warn("admin states repaired after read-back", zap.Int("attempts", attempt))
			}
			return nil
		}
		if attempt == 1 {
			break
		}
		d.log.Warn("admin states differ from what was applied; setting them again", zap.Int("servers", len(wrong)))
		if err := d.repairStates(ctx, desired, changes, wrong); err != nil {
			return fmt.Errorf("repair admin states: %w", err)
		}
	}
	names := make([]string, 0, len(wrong))
	for _, f := range wrong {
		names = append(names, f.Backend+"/"+f.Server+" want "+f.State)
	}
	return fmt.Errorf("admin states still wrong after repair: %s", strings.Join(names, ", "))
}

// repairStates sets the flips wrong again in the apply's order: the write
// services' deactivations, then the readies, a server changes fence
// forced DOWN right after its ready (a held new leader's twin comes out of
// maint UP), then the other deactivations.
func (d *Direct) repairStates(ctx context.Context, desired []services.Service, changes []target.Change, wrong []Flip) error {
	var ups, downs []Flip
	for _, f := range wrong {
		if f.State == "ready" {
			ups = append(ups, f)
		} else {
			downs = append(downs, f)
		}
	}
	writeDowns, downs := splitWrite(downs, desired)
	readied := make(map[[2]string]bool, len(ups))
	for _, f := range ups {
		readied[[2]string{f.Backend, f.Server}] = true
	}
	var fences []target.Change // of the servers readied again only
	for _, c := range changes {
		if c.Kind == target.KindForceDown && readied[[2]string{c.Backend, c.Server}] {
			fences = append(fences, c)
		}
	}
	var res target.Result
	if err := d.fenceAndFlip(ctx, fences, writeDowns, ups, &res); err != nil {
		return err
	}
	if err := target.CheckWrite(ctx); err != nil {
		return err
	}
	return d.rt.SetStates(ctx, downs)
}

// PipelineQuiet runs commands that answer nothing when they succeed (set
// server ...) over one connection, in order, and reports every one that
// answered something: "haproxy: CMD: ANSWER; ...".
func (r *Runtime) PipelineQuiet(ctx context.Context, cmds []string) error {
	answers, err := r.Pipeline(ctx, cmds)
	if err != nil {
		return err
	}
	var bad []string
	for i, a := range answers {
		if msg := strings.TrimSpace(a); msg != "" {
			bad = append(bad, cmds[i]+": "+msg)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("haproxy: %s", strings.Join(bad, "; "))
	}
	return nil
}
