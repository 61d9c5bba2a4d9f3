package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// HostPlaceholder in a dataplaneapi URL makes the entry a template: it
// expands to one Data Plane API target per inventory node whose HAProxy
// carries services (Pigsty's placement: a cluster's own members, or its
// pg_service_provider group), {host} replaced by the node's inventory host
// key, each target carrying exactly that node's clusters.
const HostPlaceholder = "{host}"

var placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

// IsTemplate reports whether the entry's URL is a template (has a brace).
func (d DataPlaneAPI) IsTemplate() bool { return strings.ContainsAny(d.URL, "{}") }

// ExpandURL returns the URL with {host} replaced by host (IPv6 addresses in
// brackets).
func (d DataPlaneAPI) ExpandURL(host string) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return strings.ReplaceAll(d.URL, HostPlaceholder, host)
}

// redactTemplate hides the password of a URL template (url.Parse cannot
// read one).
func redactTemplate(raw string) string {
	start := strings.Index(raw, "://") + 3
	if start < 3 {
		start = 0
	}
	at := strings.LastIndex(raw, "@")
	if at < start {
		return raw
	}
	if colon := strings.Index(raw[start:at], ":"); colon >= 0 {
		return raw[:start+colon+1] + "xxxxx" + raw[at:]
	}
	return raw
}

// templateProbe stands for a host while checking a template.
const templateProbe = "pgsvc-host-probe.invalid"

// validateTemplate checks a URL template: only {host}, exactly as the host
// part of an http(s) URL.
func validateTemplate(raw string) error {
	for _, p := range placeholderRE.FindAllString(raw, -1) {
		if p != HostPlaceholder {
			return fmt.Errorf("unknown placeholder %s (the only one is %s)", p, HostPlaceholder)
		}
	}
	if rest := placeholderRE.ReplaceAllString(raw, ""); strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("unbalanced brace (want a placeholder like %s)", HostPlaceholder)
	}
	if !strings.Contains(raw, HostPlaceholder) {
		return fmt.Errorf("a template needs %s", HostPlaceholder)
	}
	u, err := url.Parse(strings.ReplaceAll(raw, HostPlaceholder, templateProbe))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() != templateProbe ||
		strings.Count(raw, HostPlaceholder) != 1 {
		return fmt.Errorf("want an http(s)://[user[:pass]@]%s:port URL (%s is the host part, once)", HostPlaceholder, HostPlaceholder)
	}
	return nil
}
