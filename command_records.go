package sslci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/api"
)

// This file is `caddy sslci cancel`, `delete` and `prune`: the commands
// that remove records at SSLCI.

func cancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ORDER_ID",
		Short: "Cancels a pending order at SSLCI",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(out io.Writer, fl caddycmd.Flags) (int, error) {
			return removeOne(out, fl, api.RecordOrder)
		}),
	}
}

func deleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete CRT_ID",
		Short: "Deletes a certificate at SSLCI",
		Long: `
Deletes a certificate at SSLCI, whatever made it, without asking: a
certificate this Caddy serves keeps being served from its storage until it is
renewed. ` + "`caddy sslci list`" + ` says which one is which.`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(out io.Writer, fl caddycmd.Flags) (int, error) {
			return removeOne(out, fl, api.RecordCertificate)
		}),
	}
}

func pruneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Removes what this Caddy created at SSLCI and no longer needs",
		Long: `
Cancels the pending orders this Caddy created and no longer needs, and
deletes the certificates it created that were superseded by a newer one,
refused by its checks, or never used: those ` + "`caddy sslci list`" + ` marks
superseded, refused or unused. Records of another client of the account, or
whose ownership cannot be proven, are never touched; neither is a certificate
in this Caddy's storage, nor anything created in the last minutes.`,
		Args: cobra.NoArgs,
		RunE: run(cmdPrune),
	}
	cmd.Flags().Bool("dry-run", false, "Say what would be removed, remove nothing")
	return cmd
}

// removal is one record removed (or, with --dry-run, to remove).
type removal struct {
	Type    string   `json:"type"` // api.RecordOrder or api.RecordCertificate
	ID      int64    `json:"id"`
	Domains []string `json:"domains,omitempty"`
	Mark    string   `json:"mark,omitempty"`
	Done    bool     `json:"done"`
	Error   string   `json:"error,omitempty"`
	Skipped string   `json:"skipped,omitempty"` // why it was left alone
}

func (r removal) describe() string {
	what := "order"
	if r.Type == api.RecordCertificate {
		what = "certificate"
	}
	s := fmt.Sprintf("%s %d", what, r.ID)
	if len(r.Domains) > 0 {
		s += " (" + strings.Join(r.Domains, ",") + ")"
	}
	return s
}

func removeOne(out io.Writer, fl caddycmd.Flags, recordType string) (int, error) {
	id, err := strconv.ParseInt(fl.Arg(0), 10, 64)
	if err != nil || id <= 0 {
		return exitFailed, fmt.Errorf("sslci: %q is not an id: give the number `caddy sslci list` shows", fl.Arg(0))
	}
	env, err := loadTargets(fl)
	if err != nil {
		return exitFailed, err
	}
	accounts := env.accounts()
	if len(accounts) > 1 {
		return exitFailed, fmt.Errorf("sslci: the config has %d SSLCI accounts; choose one with --endpoint, or with --token", len(accounts))
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	r := removal{Type: recordType, ID: id}
	if err := accounts[0].iss.client.Delete(ctx, recordType, id); err != nil {
		verb := map[string]string{api.RecordOrder: "cancelling", api.RecordCertificate: "deleting"}[recordType]
		return exitFailed, fmt.Errorf("sslci: %s %s at %s: %w", verb, r.describe(), accounts[0].iss.Endpoint, err)
	}
	r.Done = true
	if fl.Bool("json") {
		return 0, writeJSON(out, r)
	}
	verb := map[string]string{api.RecordOrder: "cancelled", api.RecordCertificate: "deleted"}[recordType]
	_, err = fmt.Fprintf(out, "%s %s at %s\n", verb, r.describe(), accounts[0].iss.Endpoint)
	return 0, err
}

func cmdPrune(out io.Writer, fl caddycmd.Flags) (int, error) {
	env, err := loadTargets(fl)
	if err != nil {
		return exitFailed, err
	}
	dryRun := fl.Bool("dry-run")
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var all []removal
	failed := 0
	for _, t := range env.accounts() {
		removals, err := t.prune(ctx, dryRun)
		if err != nil {
			return exitFailed, err
		}
		for _, r := range removals {
			if r.Error != "" {
				failed++
			}
		}
		all = append(all, removals...)
	}
	if fl.Bool("json") {
		if err := writeJSON(out, map[string]any{"dry_run": dryRun, "removed": nonNil(all)}); err != nil {
			return exitFailed, err
		}
	} else {
		printRemovals(out, all, dryRun)
	}
	if failed > 0 {
		return exitFailed, fmt.Errorf("sslci: prune: %d of %d removals failed", failed, len(all))
	}
	return 0, nil
}

func nonNil(r []removal) []removal {
	if r == nil {
		return []removal{}
	}
	return r
}

func printRemovals(out io.Writer, all []removal, dryRun bool) {
	if len(all) == 0 {
		fmt.Fprintln(out, "nothing to prune")
		return
	}
	for _, r := range all {
		verb := map[string]string{api.RecordOrder: "cancelled", api.RecordCertificate: "deleted"}[r.Type]
		switch {
		case dryRun:
			verb = "would remove"
		case r.Error != "":
			verb = "FAILED to remove"
		case r.Skipped != "":
			verb = "left alone"
		}
		line := fmt.Sprintf("%s %s: %s", verb, r.describe(), markText[r.Mark])
		if r.Error != "" || r.Skipped != "" {
			line += ": " + r.Error + r.Skipped
		}
		fmt.Fprintln(out, line)
	}
}

// prune removes the account's records marked prunable: only what the
// ledger proves this Caddy created, never a certificate in storage.
func (t *target) prune(ctx context.Context, dryRun bool) ([]removal, error) {
	l, _, err := t.listing(ctx)
	if err != nil {
		return nil, err
	}
	todo := prunables(l)
	if dryRun || len(todo) == 0 {
		return todo, nil
	}
	var names []string
	for _, r := range todo {
		names = append(names, normalNames(r.Domains)...)
	}
	return t.removeUnderLocks(ctx, names, prunables)
}

// removeUnderLocks removes the records pick chooses from a listing made
// under certmagic's issuance lock ("issue_cert_<name>", as the issuer's
// own reconciliation takes it) of every name given, so that it never
// races an issuance of a running Caddy on the same storage. certmagic
// holds a name's lock through all its retries: what involves a name whose
// lock stays held is left alone. Used by prune and by delete_replaced
// (replaced.go).
func (t *target) removeUnderLocks(ctx context.Context, names []string, pick func(*accountListing) []removal) ([]removal, error) {
	names = slices.Clone(names)
	slices.Sort(names)
	busy := map[string]bool{}
	for _, name := range slices.Compact(names) {
		lockCtx, cancel := context.WithTimeout(ctx, lockWait)
		err := t.storage.Lock(lockCtx, "issue_cert_"+name)
		cancel()
		if err != nil {
			busy[name] = true
			continue
		}
		defer t.storage.Unlock(context.WithoutCancel(ctx), "issue_cert_"+name) //nolint:errcheck // certmagic's storage logs it
	}

	l, view, err := t.listing(ctx)
	if err != nil {
		return nil, err
	}
	todo := pick(l)
	done := map[string]bool{}
	for i := range todo {
		r := &todo[i]
		if j := slices.IndexFunc(r.Domains, func(d string) bool { return busy[strings.ToLower(strings.TrimSuffix(d, "."))] }); j >= 0 {
			r.Skipped = "an issuance of " + r.Domains[j] + " holds its lock"
			continue
		}
		err := t.iss.client.Delete(ctx, r.Type, r.ID)
		if err != nil && !errors.Is(err, api.ErrInvalidRequest) {
			r.Error = err.Error()
			continue
		}
		// A 400 is taken as "no such record", as the issuer's
		// reconciliation does: gone already.
		r.Done = true
		done[objectKey(r.Type, r.ID)] = true
	}
	for _, key := range view.resolved(done) {
		t.iss.drop(ctx, key)
	}
	return todo, nil
}

// lockWait bounds the wait for certmagic's lock of a name.
const lockWait = 10 * time.Second

func prunables(l *accountListing) []removal {
	var todo []removal
	for _, o := range l.PendingOrders {
		if prunable(o.Mark) {
			todo = append(todo, removal{Type: api.RecordOrder, ID: o.ID, Domains: o.Domains, Mark: o.Mark})
		}
	}
	for _, c := range l.Certificates {
		if prunable(c.Mark) {
			todo = append(todo, removal{Type: api.RecordCertificate, ID: c.ID, Domains: c.Domains, Mark: c.Mark})
		}
	}
	return todo
}
