// Package haproxyname is the one place that decides whether a name, an
// address or a port may be written into an HAProxy configuration. Everything
// that reaches HAProxy (inventory hosts, Patroni member keys and URLs,
// rendered sections) is checked with these functions: at inventory load, at
// DCS decode, and again right before rendering or applying.
//
// HAProxy's configuration is line- and word-based: a space starts a new
// keyword, '#' starts a comment, a newline a new statement. A name with any of
// those would inject configuration (a server with no health check, in a write
// service). The rules here are strict whitelists, never escaping.
package haproxyname

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Length limits. HAProxy has no hard limit on section or server names, but
// every server is one line of the server-state file (at most 2000 bytes in
// HAProxy 2.6, 512 in older releases) holding the backend name, the server
// name, its address and its FQDN. 63 is a DNS label and keeps those lines
// well within bounds; section names are <cluster>-<service>.
const (
	// MaxName is the longest cluster, member or service name (a DNS label).
	MaxName = 63
	// MaxIdentifier is the longest section or server name.
	MaxIdentifier = 2*MaxName + 1
	// MaxHost is the longest host name (RFC 1035).
	MaxHost = 253
)

// Identifier checks an HAProxy section or server name: 1 to MaxIdentifier
// characters among letters, digits, '-', '_', '.', ':' (HAProxy's own
// rule for proxy and server names).
func Identifier(s string) error {
	return ident(s, MaxIdentifier)
}

// Name checks a cluster, member or service name: an Identifier of at most
// MaxName characters.
func Name(s string) error {
	return ident(s, MaxName)
}

func ident(s string, max int) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > max {
		return fmt.Errorf("name of %d characters (at most %d)", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if !identChar(s[i]) {
			return fmt.Errorf("name %s: character %q not allowed (want letters, digits, '-', '_', '.', ':')", quote(s), s[i])
		}
	}
	return nil
}

func identChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == ':'
}

// Address checks a server address: an IPv4 or IPv6 address (no zone), or a
// host name of RFC 1123 labels (letters, digits, '-'), at most MaxHost
// characters. It does not resolve names (see Resolvable).
func Address(s string) error {
	if s == "" {
		return fmt.Errorf("empty address")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("address %s: zoned IPv6 addresses are not supported", quote(s))
		}
		return nil
	}
	if len(s) > MaxHost {
		return fmt.Errorf("host name of %d characters (at most %d)", len(s), MaxHost)
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("address %s: not an IP address or a host name", quote(s))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("address %s: not an IP address or a host name (character %q)", quote(s), c)
			}
		}
	}
	if isDigitsAndDots(s) {
		// 127.1 or 300.1.1.1: HAProxy's resolver would read it differently.
		return fmt.Errorf("address %s: not a valid IPv4 address", quote(s))
	}
	return nil
}

// BindAddress checks a frontend bind address: "*" (every address) or an IP.
func BindAddress(s string) error {
	if s == "*" || s == "" {
		return nil
	}
	if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
		return fmt.Errorf("bind address %s: want * or an IP address", quote(s))
	}
	return nil
}

// Resolvable checks Address and, for a host name, that lookup resolves it
// (nil lookup: net.LookupHost). IP addresses are never looked up.
func Resolvable(s string, lookup func(string) ([]string, error)) error {
	if err := Address(s); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if lookup == nil {
		lookup = net.LookupHost
	}
	addrs, err := lookup(s)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("host %s does not resolve", quote(s))
	}
	return nil
}

// Port checks a TCP port: 1-65535.
func Port(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d out of range (1-65535)", p)
	}
	return nil
}

// Word checks one configuration word written as-is (a health-check URI, an
// option value): printable ASCII, no space, no '#', no quote or backslash.
func Word(s string) error {
	if s == "" {
		return fmt.Errorf("empty word")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '#' || c == '"' || c == '\'' || c == '\\' {
			return fmt.Errorf("%s: character %q not allowed", quote(s), c)
		}
	}
	return nil
}

func isDigitsAndDots(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// quote keeps hostile input readable and on one line in messages.
func quote(s string) string { return QuoteShort(s) }

// MaxQuoted is how much of a value QuoteShort quotes: etcd takes values up
// to 1.5 MiB, inventories any length, and messages go to plan warnings, the
// status page and the log.
const MaxQuoted = 64

// QuoteShort quotes s for a message, on one line, cut to MaxQuoted bytes
// with its full length said when it is longer.
func QuoteShort(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(Cut(s, MaxQuoted)) + fmt.Sprintf("... (%d bytes)", len(s))
}

// Cut returns at most the first n bytes of s, on a character boundary.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
