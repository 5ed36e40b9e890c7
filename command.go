package sslci

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/api"
)

// This file registers `caddy sslci` and its subcommands with Caddy's
// command machinery, as `caddy storage` registers its own. Each
// subcommand finds the issuer(s) it works for in the user's config
// (command_config.go), and prints a table, or JSON with --json.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sslci",
		Usage: "list|cancel|delete|prune|check|status|renew ...",
		Short: "Certificates and orders at SSLCI; preflight checks of the verification; what is stored; renewals now",
		Long: `
Works with the SSLCI account(s) of the sslci issuers in the config: the one
given with --config (and --adapter), or the Caddyfile in the current
directory. Their token, endpoint and storage come from the config, with
placeholders such as {env.SSLCI_TOKEN} resolved. Without an sslci issuer in a
config, --token (or the SSLCI_TOKEN environment variable), --endpoint and
--storage-dir say where to look.

  list            certificates and pending orders at SSLCI, each marked:
                  served by this Caddy, superseded, refused, unused, or
                  not from this Caddy
  cancel ORDER    cancels a pending order
  delete CRT      deletes a certificate
  prune           cancels the orders this Caddy created and no longer
                  needs, deletes the certificates it superseded or refused;
                  never touches what another client of the account made
  check NAME...   checks that SSLCI's verification of each name would
                  reach this Caddy, without spending an order
  status [NAME...]
                  the stored certificates, from storage alone: expiry,
                  when they renew, whose key, each name's last
                  verification and whether the renewal reuses it; and
                  the records left to settle with SSLCI
  renew NAME...   asks the running Caddy, through its admin endpoint, to
                  renew now (--force: even if not due); see renew --help

The token is never printed. --json prints JSON for scripts.
`,
		CobraFunc: func(cmd *cobra.Command) {
			for _, sub := range []*cobra.Command{listCommand(), cancelCommand(), deleteCommand(), pruneCommand(), checkCommand(), statusCommand()} {
				addCommonFlags(sub)
				cmd.AddCommand(sub)
			}
			cmd.AddCommand(renewCommand()) // its own flags: it asks the running Caddy
		},
	})
}

// addCommonFlags adds the flags every subcommand takes: where the issuer's
// config comes from, and the output format.
func addCommonFlags(cmd *cobra.Command) {
	cmd.Flags().StringP("config", "c", "", "Configuration file (default: the Caddyfile in the current directory)")
	cmd.Flags().StringP("adapter", "a", "", "Name of the config adapter to apply")
	cmd.Flags().String("token", "", "API token, if the config has no sslci issuer (default: $SSLCI_TOKEN); placeholders such as {env.X} are resolved")
	cmd.Flags().String("endpoint", "", "API URL: the issuer with this endpoint, or with --token the one to use (default "+api.DefaultEndpoint+")")
	cmd.Flags().String("storage-dir", "", "Caddy's storage is the file system at this path (default: the config's storage)")
	cmd.Flags().Bool("json", false, "Print JSON")
}

// run adapts a subcommand to Caddy's CommandFunc convention (its errors go
// through Caddy's logger, an exit status above 1 is kept) with the command's
// output writer, so that tests can read what it prints.
func run(f func(out io.Writer, fl caddycmd.Flags) (int, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			return f(cmd.OutOrStdout(), fl)
		})(cmd, args)
	}
}

// exitFailed is the exit status of a command whose work failed (a check
// that did not pass, an API request refused); 1 as for any Caddy error.
const exitFailed = caddy.ExitCodeFailedStartup

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, in aligned columns.
func table(out io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}
