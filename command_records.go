package sslci

import (
	"context"
	"fmt"
	"io"
	"strconv"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
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
	r := ledger.Removal{Type: recordType, ID: id}
	if err := accounts[0].iss.client.Delete(ctx, recordType, id); err != nil {
		verb := map[string]string{api.RecordOrder: "cancelling", api.RecordCertificate: "deleting"}[recordType]
		return exitFailed, fmt.Errorf("sslci: %s %s at %s: %w", verb, r.Describe(), accounts[0].iss.Endpoint, err)
	}
	r.Done = true
	if fl.Bool("json") {
		return 0, writeJSON(out, r)
	}
	verb := map[string]string{api.RecordOrder: "cancelled", api.RecordCertificate: "deleted"}[recordType]
	_, err = fmt.Fprintf(out, "%s %s at %s\n", verb, r.Describe(), accounts[0].iss.Endpoint)
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
	var all []ledger.Removal
	failed := 0
	for _, t := range env.accounts() {
		removals, err := t.iss.ledger.Prune(ctx, dryRun)
		if err != nil {
			return exitFailed, fmt.Errorf("sslci: %s: %w", t.iss.Endpoint, err)
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

func nonNil(r []ledger.Removal) []ledger.Removal {
	if r == nil {
		return []ledger.Removal{}
	}
	return r
}

func printRemovals(out io.Writer, all []ledger.Removal, dryRun bool) {
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
		line := fmt.Sprintf("%s %s: %s", verb, r.Describe(), ledger.MarkText[r.Mark])
		if r.Error != "" || r.Skipped != "" {
			line += ": " + r.Error + r.Skipped
		}
		fmt.Fprintln(out, line)
	}
}
