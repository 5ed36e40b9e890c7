package sslci

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/api"
)

// This file is `caddy sslci list`: what the account holds at SSLCI, each
// record marked by what this Caddy knows of it (see mark).

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

// Marks of a record at SSLCI, as they appear in --json.
const (
	markServed     = "served"
	markSuperseded = "superseded"
	markRefused    = "refused"
	markUnused     = "unused"
	markInProgress = "in_progress"
	markForeign    = "not_from_this_caddy"
)

var markText = map[string]string{
	markServed:     "served by this Caddy",
	markSuperseded: "superseded",
	markRefused:    "refused by the checks",
	markUnused:     "created by this Caddy, unused",
	markInProgress: "in progress",
	markForeign:    "not from this Caddy",
}

// prunable says which marks `caddy sslci prune` removes.
func prunable(mark string) bool {
	return mark == markSuperseded || mark == markRefused || mark == markUnused
}

type listedCertificate struct {
	ID      int64    `json:"crt_id"`
	Domains []string `json:"domains"`
	AddTime int64    `json:"add_time"` // Unix seconds, as SSLCI says
	EndTime int64    `json:"end_time"`
	Mark    string   `json:"mark"`
	Note    string   `json:"note,omitempty"`
}

type listedOrder struct {
	ID      int64    `json:"order_id"`
	Domains []string `json:"domains"`
	Status  string   `json:"status"`
	Mark    string   `json:"mark"`
}

// accountListing is one account's records, marked.
type accountListing struct {
	Endpoint      string              `json:"endpoint"`
	Account       string              `json:"account"` // a hash of the token
	Storage       string              `json:"storage"`
	Certificates  []listedCertificate `json:"certificates"`
	PendingOrders []listedOrder       `json:"pending_orders"`
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
		l, _, err := t.listing(ctx)
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
		text := markText[c.Mark]
		if c.Note != "" {
			text += " (" + c.Note + ")"
		}
		rows = append(rows, []string{"certificate", strconv.FormatInt(c.ID, 10), strings.Join(c.Domains, ","),
			shortTime(c.AddTime), shortTime(c.EndTime), text})
	}
	for _, o := range l.PendingOrders {
		rows = append(rows, []string{"order", strconv.FormatInt(o.ID, 10), strings.Join(o.Domains, ","), "", "", o.Status + ", " + markText[o.Mark]})
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

// listing lists the account at SSLCI and marks each record; the view it
// marked them with tells prune which ledger records a removal resolves.
func (t *target) listing(ctx context.Context) (*accountListing, *ledgerView, error) {
	list, err := t.iss.client.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("sslci: listing the account at %s: %w", t.iss.Endpoint, err)
	}
	var leaves []leafInStorage
	if t.leafKey != "" {
		leaves, err = readLeaf(ctx, t.storage, t.leafKey)
	} else {
		leaves, err = leavesInStorage(ctx, t.storage, t.iss.IssuerKey())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sslci: reading the certificates in storage: %w", err)
	}
	view, err := t.ledgerView(ctx, list, leaves)
	if err != nil {
		return nil, nil, err
	}
	l := &accountListing{Endpoint: t.iss.Endpoint, Account: t.iss.account, Storage: describeStorage(t.storage),
		Certificates: []listedCertificate{}, PendingOrders: []listedOrder{}}
	for _, c := range list.Certificates {
		mark, note := markCertificate(c, list.Certificates, leaves, view.certificate(c))
		l.Certificates = append(l.Certificates, listedCertificate{
			ID: c.ID, Domains: c.Domains, AddTime: c.Added.Unix(), EndTime: c.Expires.Unix(), Mark: mark, Note: note,
		})
	}
	for _, o := range list.PendingOrders {
		l.PendingOrders = append(l.PendingOrders, listedOrder{ID: o.ID, Domains: o.Domains, Status: o.Status, Mark: markOrder(view.order(o))})
	}
	return l, view, nil
}

// markCertificate marks c. A certificate in storage is served, whoever made
// it (the note says where); of the others, only those the ledger proves
// ours get any other mark than "not from this Caddy".
func markCertificate(c api.CertificateInfo, all []api.CertificateInfo, leaves []leafInStorage, rec ownedRecord) (mark, note string) {
	if key := servedAs(c, leaves); key != "" {
		return markServed, key
	}
	switch {
	case !rec.ours:
		return markForeign, ""
	case rec.superseded:
		for _, other := range all {
			if servedAs(other, leaves) != "" && slices.Equal(normalNames(other.Domains), normalNames(c.Domains)) {
				note = fmt.Sprintf("by %d", other.ID)
			}
		}
		return markSuperseded, note
	case rec.refused:
		return markRefused, ""
	case rec.recent:
		return markInProgress, ""
	}
	return markUnused, ""
}

// servedAs returns the storage key of the leaf c is, if any: same names,
// and end_time equal to its NotAfter (finalize returns no crt_id to match).
func servedAs(c api.CertificateInfo, leaves []leafInStorage) string {
	names := normalNames(c.Domains)
	for _, leaf := range leaves {
		if slices.Equal(leaf.names, names) && leaf.notAfter == c.Expires.Unix() {
			return leaf.key
		}
	}
	return ""
}

func markOrder(rec ownedRecord) string {
	switch {
	case !rec.ours:
		return markForeign
	case rec.recent:
		return markInProgress
	default:
		return markUnused
	}
}

// leafInStorage is a certificate this Caddy holds in storage for the issuer.
type leafInStorage struct {
	key      string   // its storage key
	names    []string // sorted
	notAfter int64    // Unix seconds
}

// leavesInStorage reads every certificate certmagic stored for issuerKey
// (certificates/<issuer key>/<name>/<name>.crt).
func leavesInStorage(ctx context.Context, storage certmagic.Storage, issuerKey string) ([]leafInStorage, error) {
	keys, err := listTree(ctx, storage, certmagic.StorageKeys.CertsPrefix(issuerKey))
	if err != nil {
		return nil, err
	}
	var leaves []leafInStorage
	for _, key := range keys {
		if !strings.HasSuffix(key, ".crt") {
			continue
		}
		leaf, err := readLeaf(ctx, storage, key)
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, leaf...)
	}
	return leaves, nil
}

// readLeaf reads the certificate stored at key: none if it does not parse.
func readLeaf(ctx context.Context, storage certmagic.Storage, key string) ([]leafInStorage, error) {
	data, err := storage.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil // not a certificate this tool can match; certmagic reports it
	}
	return []leafInStorage{{key: key, names: normalNames(leaf.DNSNames), notAfter: leaf.NotAfter.Unix()}}, nil
}
