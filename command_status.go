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

// This file is `caddy sslci status`: what the issuers store, from storage
// alone (ledger.Status): no API request, so it works while Caddy is
// stopped, and while SSLCI cannot be reached.

func statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Shows the stored certificates, their renewal, and what is left to settle",
		Long: `
Shows, from Caddy's storage alone (no request to SSLCI), each certificate the
issuer stores (or those for the names given): its expiry, when certmagic
renews it (the policy's renewal_window_ratio: by default once a third of its
lifetime is left), whose private key it is for (Caddy's CSR's, or SSLCI's),
and for each name when SSLCI last verified it, and whether the renewal
reuses that verification (within 28 days of it: the renewal costs one
request, the finalize) or verifies the name again (two more requests per
name, and SSLCI's check must reach this server). A verification is recorded
only where a renewal reuses it: "-" is none recorded. Then the ledger records
still waiting to be settled with SSLCI.

What cannot be read is shown as unknown, and the exit status is 1; so it is
when a name given has no certificate.`,
		RunE: run(cmdStatus),
	}
}

// accountStatus is one account's status, as --json prints it.
type accountStatus struct {
	Endpoint     string              `json:"endpoint"`
	Account      string              `json:"account"` // a hash of the token
	Storage      string              `json:"storage"`
	Certificates []certificateStatus `json:"certificates"`
	NotStored    []string            `json:"not_stored,omitempty"` // names given without a certificate
	Unsettled    []unsettledRecord   `json:"unsettled"`
	// UnsettledError: the ledger could not be read, what it holds is unknown.
	UnsettledError string `json:"unsettled_error,omitempty"`
}

type certificateStatus struct {
	Names           []string     `json:"names"`
	StorageKey      string       `json:"storage_key"`
	NotBefore       *time.Time   `json:"not_before,omitempty"`
	NotAfter        *time.Time   `json:"not_after,omitempty"`
	RenewAt         *time.Time   `json:"renew_at,omitempty"`
	InRenewalWindow bool         `json:"in_renewal_window"`
	Expired         bool         `json:"expired"`
	KeySource       string       `json:"key_source"` // csr, sslci, or unknown
	Verifications   []nameStatus `json:"verifications"`
	// RenewalRequests is what the renewal costs at SSLCI: the finalize,
	// and a request and a confirm per name verified again.
	RenewalRequests int    `json:"renewal_requests,omitempty"`
	Error           string `json:"error,omitempty"` // unknown: not readable
}

type nameStatus struct {
	Name          string     `json:"name"`
	VerifiedAt    *time.Time `json:"verified_at,omitempty"` // absent: none recorded
	OrderID       int64      `json:"order_id,omitempty"`
	AgeSeconds    int64      `json:"age_seconds,omitempty"`
	ReusableUntil *time.Time `json:"reusable_until,omitempty"`
	AtRenewal     string     `json:"at_renewal"` // reuse, verify or unknown
	Error         string     `json:"error,omitempty"`
}

type unsettledRecord struct {
	Kind    string    `json:"kind"` // order or certificate
	Names   []string  `json:"names"`
	State   string    `json:"state"`
	ID      int64     `json:"id,omitempty"` // the order id, or the certificate id if learned
	SentAt  time.Time `json:"sent_at"`
	Storage string    `json:"storage_key"`
}

func cmdStatus(out io.Writer, fl caddycmd.Flags) (int, error) {
	env, err := loadTargets(fl)
	if err != nil {
		return exitFailed, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var names []string
	if fl.NArg() > 0 {
		names = fl.Args()
	}
	now := time.Now()
	var statuses []accountStatus
	failed := false
	for _, t := range env.accounts() {
		a, ok, err := t.status(ctx, env, names, now)
		if err != nil {
			return exitFailed, err
		}
		failed = failed || !ok
		statuses = append(statuses, *a)
	}
	if fl.Bool("json") {
		err = writeJSON(out, map[string]any{"accounts": statuses})
	} else {
		for i, a := range statuses {
			if i > 0 {
				fmt.Fprintln(out)
			}
			printStatus(out, a, now)
		}
	}
	if err == nil && failed {
		return exitFailed, fmt.Errorf("sslci: status: something could not be read, or a name has no certificate (see above)")
	}
	return 0, err
}

// status reads the account's status; ok is false if anything was unknown
// or a name given has no certificate.
func (t *target) status(ctx context.Context, env *commandEnv, names []string, now time.Time) (*accountStatus, bool, error) {
	// A certificate renews by the policy Caddy would use for its names.
	ratio := func(names []string) float64 {
		if p, err := env.forName(names[0]); err == nil && p.iss.IssuerKey() == t.iss.IssuerKey() {
			return p.ratio
		}
		return t.ratio
	}
	st, err := t.iss.ledger.Status(ctx, names, ratio, now)
	if err != nil {
		return nil, false, fmt.Errorf("sslci: %s: the stored certificates are unknown: %w", t.iss.Endpoint, err)
	}
	a := &accountStatus{Endpoint: t.iss.Endpoint, Account: t.iss.account, Storage: describeStorage(t.storage), Unsettled: []unsettledRecord{}}
	ok := true
	stored := map[string]bool{}
	for _, c := range st.Certificates {
		cs := certificateStatus{Names: c.Leaf.Names, StorageKey: c.Key, KeySource: c.KeySource, Verifications: []nameStatus{}}
		if c.Err != nil {
			cs.Names, cs.KeySource, cs.Error, ok = []string{c.Dir}, "unknown", c.Err.Error(), false
			a.Certificates = append(a.Certificates, cs)
			continue
		}
		cs.NotBefore, cs.NotAfter, cs.RenewAt = &c.NotBefore, &c.NotAfter, &c.RenewAt
		cs.Expired = c.Expired(now)
		cs.InRenewalWindow = !cs.Expired && now.After(c.RenewAt)
		if c.KeyErr != nil {
			cs.KeySource, cs.Error, ok = "unknown", c.KeyErr.Error(), false
		}
		cs.RenewalRequests = 1
		for _, v := range c.Verified {
			stored[v.Name] = true
			ns := nameStatus{Name: v.Name, AtRenewal: "verify"}
			switch {
			case v.Err != nil:
				ns.AtRenewal, ns.Error, ok = "unknown", v.Err.Error(), false
			case v.Reused:
				ns.AtRenewal = "reuse"
			}
			if v.Last != nil {
				until := v.Last.ReusableUntil()
				ns.VerifiedAt, ns.OrderID, ns.ReusableUntil = &v.Last.VerifiedAt, v.Last.OrderID, &until
				ns.AgeSeconds = int64(now.Sub(v.Last.VerifiedAt).Seconds())
			}
			if ns.AtRenewal != "reuse" {
				cs.RenewalRequests += 2 // a request and a confirm
			}
			cs.Verifications = append(cs.Verifications, ns)
		}
		a.Certificates = append(a.Certificates, cs)
	}
	for _, name := range names {
		// With a certificate unknown, a name not found may be in it.
		if !stored[ledger.NormalName(name)] && ok {
			a.NotStored = append(a.NotStored, name)
		}
	}
	ok = ok && len(a.NotStored) == 0
	for _, r := range st.Orders {
		a.Unsettled = append(a.Unsettled, unsettledRecord{Kind: "order", Names: []string{r.Domain}, State: r.State, ID: r.OrderID, SentAt: r.SentAt, Storage: r.Key})
	}
	for _, r := range st.Finalizes {
		a.Unsettled = append(a.Unsettled, unsettledRecord{Kind: "certificate", Names: r.Names, State: r.State, ID: r.CertID, SentAt: r.SentAt, Storage: r.Key})
	}
	if st.RecordsErr != nil {
		a.UnsettledError, ok = st.RecordsErr.Error(), false
	}
	return a, ok, nil
}

func printStatus(out io.Writer, a accountStatus, now time.Time) {
	fmt.Fprintf(out, "SSLCI %s, account %s, storage %s\n", a.Endpoint, a.Account, a.Storage)
	var rows [][]string
	var problems []string
	for _, c := range a.Certificates {
		if c.Error != "" {
			problems = append(problems, fmt.Sprintf("%s: unknown: %s", strings.Join(c.Names, ","), c.Error))
		}
		if c.NotAfter == nil {
			rows = append(rows, []string{strings.Join(c.Names, ","), "unknown", "", "", "", "", ""})
			continue
		}
		expires, renews := fmtTime(*c.NotAfter), fmtTime(*c.RenewAt)
		switch {
		case c.Expired:
			expires += " (expired)"
		case c.InRenewalWindow:
			renews += " (due)"
		}
		cost := strconv.Itoa(c.RenewalRequests) + " request"
		if c.RenewalRequests > 1 {
			cost += "s"
		}
		for i, v := range c.Verifications {
			verified, atRenewal := "-", "verify again" // "-": none recorded
			if v.VerifiedAt != nil {
				verified = fmtAge(now.Sub(*v.VerifiedAt)) + " ago"
			}
			switch {
			case v.AtRenewal == "reuse":
				atRenewal = "reuse (until " + fmtTime(*v.ReusableUntil) + ")"
			case v.AtRenewal == "verify" && v.ReusableUntil != nil:
				atRenewal = "verify again (reuse ends " + fmtTime(*v.ReusableUntil) + ")"
			case v.AtRenewal == "unknown":
				verified, atRenewal = "unknown", "unknown"
				problems = append(problems, fmt.Sprintf("%s: verification unknown: %s", v.Name, v.Error))
			}
			row := []string{v.Name, "", "", "", verified, atRenewal, ""}
			if i == 0 {
				row[1], row[2], row[3], row[6] = expires, renews, c.KeySource, cost
			} else {
				row[0] = "  " + v.Name // another name of the same certificate
			}
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		fmt.Fprintln(out, "no certificate stored")
	} else {
		table(out, []string{"NAME", "EXPIRES", "RENEWS", "KEY", "VERIFIED", "AT RENEWAL", "RENEWAL COST"}, rows)
	}
	for _, name := range a.NotStored {
		fmt.Fprintf(out, "%s: no certificate stored\n", name)
	}
	for _, p := range problems {
		fmt.Fprintln(out, p)
	}

	switch {
	case a.UnsettledError != "":
		fmt.Fprintf(out, "\nLedger records waiting to be settled with SSLCI: unknown: %s\n", a.UnsettledError)
	case len(a.Unsettled) == 0:
		fmt.Fprintln(out, "\nNo ledger record waiting to be settled with SSLCI.")
	default:
		fmt.Fprintln(out, "\nLedger records waiting to be settled with SSLCI (by the next issuance of their names, or a minute after Caddy starts):")
		rows = nil
		for _, r := range a.Unsettled {
			id := ""
			if r.ID != 0 {
				id = strconv.FormatInt(r.ID, 10)
			}
			rows = append(rows, []string{r.Kind, strings.Join(r.Names, ","), r.State, id, fmtTime(r.SentAt)})
		}
		table(out, []string{"KIND", "NAMES", "STATE", "ID", "SENT"}, rows)
	}
}

func fmtTime(t time.Time) string { return shortTime(t.Unix()) }

// fmtAge is a duration in its largest unit: 3d, 5h, 12m, 40s.
func fmtAge(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", max(0, int(d/time.Second)))
}
