package main

import (
	"net/url"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/config"
)

// cmdlinePasswordWarnings lists, redacted, every URL given on the command
// line (--dataplaneapi, --etcd) that carries a password: the command line of
// a process is readable by every local user in /proc/PID/cmdline (and `ps`),
// so such a password is not secret. The config file's password_file or the
// PGSVC_DATAPLANEAPI_PASSWORD environment variable keep it out of there.
func cmdlinePasswordWarnings(dpapi []string, etcd string) []string {
	var out []string
	check := func(flag, raw string) {
		if hasPassword(raw) {
			out = append(out, "--"+flag+" "+config.Redact(raw)+": a password on the command line is visible to every local user "+
				"in /proc/PID/cmdline and ps; use password_file in the config file or "+
				"PGSVC_DATAPLANEAPI_PASSWORD (etcd: password_file) instead")
		}
	}
	for _, u := range dpapi {
		check("dataplaneapi", u)
	}
	if etcd != "" {
		for _, u := range strings.Split(etcd, ",") {
			check("etcd", u)
		}
	}
	return out
}

func hasPassword(raw string) bool {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		// Unparsable: be conservative if it looks like user:pass@.
		at := strings.LastIndex(raw, "@")
		return at > 0 && strings.Contains(raw[:at], ":") && strings.Contains(raw[:at], "//")
	}
	if u.User == nil {
		return false
	}
	p, ok := u.User.Password()
	return ok && p != ""
}

// cmdlineWarnings are set by parseRunFlags and logged by runRun once the
// logger exists.
var cmdlineWarnings []string
