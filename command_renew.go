package sslci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// This file is `caddy sslci renew`: the client of the running Caddy's
// POST /sslci/renew (admin.go), found as `caddy stop` and `caddy reload`
// find it.

func renewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "renew NAME...",
		Short: "Asks the running Caddy to renew certificates now",
		Long: `
Asks the running Caddy, through its admin endpoint, to renew the certificate
of each name now, and waits for the result: the new certificate's serial and
expiry, or the issuer's error. The renewal is certmagic's own, as when a
certificate is due (its lock, storage and events), and Caddy serves the
renewed certificate at once. Each name must be managed by an sslci issuer.

A certificate that is not due yet is left alone, and the command says when it
will be; --force renews it anyway.

The admin endpoint is --address, or the config's (--config, --adapter, or
the Caddyfile in the current directory), or localhost:2019. --timeout bounds
the whole renewal, waiting for a renewal under way included. The exit status
is 1 if a renewal failed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: run(cmdRenew),
	}
	cmd.Flags().Bool("force", false, "Renew even if not due")
	cmd.Flags().Duration("timeout", defaultRenewTimeout, "How long the renewal may take")
	cmd.Flags().String("address", "", "The address of Caddy's admin endpoint (default: the config's, or "+caddy.DefaultAdminListen+")")
	cmd.Flags().StringP("config", "c", "", "Configuration file, to find the admin endpoint (default: the Caddyfile in the current directory)")
	cmd.Flags().StringP("adapter", "a", "", "Name of the config adapter to apply")
	cmd.Flags().Bool("json", false, "Print JSON")
	return cmd
}

func cmdRenew(out io.Writer, fl caddycmd.Flags) (int, error) {
	timeout := fl.Duration("timeout")
	if timeout <= 0 {
		return exitFailed, fmt.Errorf("sslci: --timeout %s is not a positive duration", fl.String("timeout"))
	}
	addr, err := adminAddress(fl)
	if err != nil {
		return exitFailed, err
	}
	body, err := json.Marshal(renewRequest{Names: fl.Args(), Force: fl.Bool("force"), Timeout: caddy.Duration(timeout)})
	if err != nil {
		return exitFailed, err
	}
	ans, err := askRenew(addr, body, timeout)
	if err != nil {
		return exitFailed, err
	}
	if len(ans.Results) == 0 { // refused as a whole: a name not managed, say
		return exitFailed, errors.New(ans.Error)
	}
	if fl.Bool("json") {
		if err := writeJSON(out, ans); err != nil {
			return exitFailed, err
		}
	} else {
		printRenewals(out, ans.Results)
	}
	if ans.Error != "" {
		return exitFailed, errors.New(ans.Error)
	}
	return 0, nil
}

// adminAddress is --address, or the admin address of the config, which
// must not turn the admin endpoint off.
func adminAddress(fl caddycmd.Flags) (string, error) {
	if addr := fl.String("address"); addr != "" {
		return addr, nil
	}
	cfgJSON, file, _, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return "", fmt.Errorf("sslci: loading the config, to find the admin endpoint: %w", err)
	}
	var cfg struct {
		Admin *caddy.AdminConfig `json:"admin"`
	}
	if len(cfgJSON) > 0 {
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			return "", fmt.Errorf("sslci: reading the config: %w", err)
		}
	}
	if cfg.Admin != nil && cfg.Admin.Disabled {
		return "", fmt.Errorf("sslci: the admin endpoint is off in %s (admin off): renew asks the running Caddy through it; turn it on (the admin option), or give --address", file)
	}
	addr, err := caddycmd.DetermineAdminAPIAddress("", cfgJSON, file, fl.String("adapter"))
	if err != nil {
		return "", fmt.Errorf("sslci: finding the admin endpoint: %w", err)
	}
	return addr, nil
}

// askRenew posts the request to the admin endpoint at addr and reads the
// answer, an error from the endpoint included; it waits a minute longer
// than the renewal may take.
func askRenew(addr string, body []byte, timeout time.Duration) (renewResponse, error) {
	type answer struct {
		resp *http.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := caddycmd.AdminAPIRequest(addr, http.MethodPost, renewPath, nil, bytes.NewReader(body))
		done <- answer{resp, err}
	}()
	var a answer
	select {
	case a = <-done:
	case <-time.After(timeout + time.Minute):
		return renewResponse{}, fmt.Errorf("sslci: no answer from the admin endpoint at %s within %s", addr, timeout+time.Minute)
	}
	var ans renewResponse
	if a.err != nil {
		// AdminAPIRequest puts an error status's body in its error.
		msg := a.err.Error()
		if i := strings.Index(msg, "{"); i >= 0 && json.Unmarshal([]byte(msg[i:]), &ans) == nil && ans.Error != "" {
			return ans, nil
		}
		if strings.Contains(msg, "performing request") {
			return ans, fmt.Errorf("sslci: no admin endpoint answers at %s (is Caddy running, with its admin endpoint there? --address or the config's admin option say where): %w", addr, a.err)
		}
		return ans, fmt.Errorf("sslci: the admin endpoint at %s: %w", addr, a.err)
	}
	defer a.resp.Body.Close()
	if err := json.NewDecoder(a.resp.Body).Decode(&ans); err != nil {
		return ans, fmt.Errorf("sslci: reading the answer of the admin endpoint at %s: %w", addr, err)
	}
	return ans, nil
}

func printRenewals(out io.Writer, results []renewResult) {
	var rows [][]string
	for _, r := range results {
		result := "renewed"
		switch {
		case r.Error != "":
			result = "FAILED: " + r.Error
		case !r.Renewed && r.RenewsAfter.IsZero():
			result = "not renewed"
		case !r.Renewed:
			result = fmt.Sprintf("not due: renews after %s; --force renews now", shortTime(r.RenewsAfter.Unix()))
		}
		rows = append(rows, []string{r.Name, r.Serial, shortTime(r.NotAfter.Unix()), result})
	}
	table(out, []string{"NAME", "SERIAL", "NOT AFTER", "RESULT"}, rows)
}
