package sslci

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file is `caddy sslci list`: what the account holds at SSLCI, each
// record marked by what this Caddy knows of it (ledger/marks.go).

func listCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Lists the certificates and pending orders at SSLCI, marked",
		Long: `
Lists the certificates and pending orders of the account at SSLCI. Each is
marked:

  served by this Caddy     a certificate in this Caddy's storage (same names,
                           same expiry)
  superseded               created by this Caddy, replaced by a newer one
  refused                  created by this Caddy, refused by its checks
  unused                   created by this Caddy, never used (an order left
                           pending, a certificate whose answer was lost)
  in progress              created by this Caddy moments ago
  not from this Caddy      made by another client of the account, or
                           ownership cannot be proven

` + "`caddy sslci prune`" + ` cleans up the superseded, refused and unused ones.`,
		Args: cobra.NoArgs,
		RunE: run(cmdList),
	}
}

// accountListing is one account's records, marked.
type accountListing struct {
	Endpoint      string                     `json:"endpoint"`
	Account       string                     `json:"account"` // a hash of the token
	Storage       string                     `json:"storage"`
	Certificates  []ledger.ListedCertificate `json:"certificates"`
	PendingOrders []ledger.ListedOrder       `json:"pending_orders"`
}

func cmdList(out io.Writer, fl caddycmd.Flags) (int, error) {
	env, err := loadTargets(fl)
	if err != nil {
		return exitFailed, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var listings []accountListing
	for _, t := range env.accounts() {
		l, err := t.listing(ctx)
		if err != nil {
			return exitFailed, err
		}
		listings = append(listings, *l)
	}
	if fl.Bool("json") {
		return 0, writeJSON(out, map[string]any{"accounts": listings})
	}
	for i, l := range listings {
		if i > 0 {
			fmt.Fprintln(out)
		}
		printListing(out, l)
	}
	return 0, nil
}

// commandTimeout bounds one command's API requests and storage access.
const commandTimeout = 5 * time.Minute

func printListing(out io.Writer, l accountListing) {
	fmt.Fprintf(out, "SSLCI %s, account %s, storage %s\n", l.Endpoint, l.Account, l.Storage)
	var rows [][]string
	for _, c := range l.Certificates {
		text := ledger.MarkText[c.Mark]
		if c.Note != "" {
			text += " (" + c.Note + ")"
		}
		rows = append(rows, []string{"certificate", strconv.FormatInt(c.ID, 10), strings.Join(c.Domains, ","),
			shortTime(c.AddTime), shortTime(c.EndTime), text})
	}
	for _, o := range l.PendingOrders {
		rows = append(rows, []string{"order", strconv.FormatInt(o.ID, 10), strings.Join(o.Domains, ","), "", "", o.Status + ", " + ledger.MarkText[o.Mark]})
	}
	if len(rows) == 0 {
		fmt.Fprintln(out, "no certificates and no pending orders")
		return
	}
	table(out, []string{"KIND", "ID", "NAMES", "ADDED", "EXPIRES", "MARK"}, rows)
}

func shortTime(unix int64) string {
	return time.Unix(unix, 0).UTC().Format("2006-01-02 15:04Z")
}

// listing lists the account at SSLCI, each record marked by the issuer's
// own ownership rule (ledger.Mark).
func (t *target) listing(ctx context.Context) (*accountListing, error) {
	m, err := t.iss.ledger.Mark(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sslci: %s: %w", t.iss.Endpoint, err)
	}
	return &accountListing{Endpoint: t.iss.Endpoint, Account: t.iss.account, Storage: describeStorage(t.storage),
		Certificates: m.Certificates, PendingOrders: m.PendingOrders}, nil
}
