package issuance

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file holds the two steps of an Issue that create something at
// SSLCI (a verification request makes an order, a finalize a
// certificate), each written to the ledger before it is sent. A POST
// whose answer was lost may have been processed: before it is sent again,
// SSLCI's list tells what it made, and that is cancelled or deleted
// (ledger.Reconcile), so that retrying never piles up orders or
// certificates.

// request asks for a verification of name, recorded first. A lost
// answer is reconciled (its order, if made, cancelled) before the next try.
func (r *run) request(ctx context.Context, name string) (*ledger.OrderRecord, error) {
	iss := r.iss
	if err := r.retry(ctx, func() error { return iss.Ledger.EnsureFloor(ctx) }); err != nil {
		return nil, err
	}
	var rec *ledger.OrderRecord
	var lostErr error
	lost, lists := false, r.policy().Attempts
	err := r.retry(ctx, func() error {
		if lost {
			if err := r.reconcileLost(ctx, ledger.OrderOf(name), &lists, lostErr); err != nil {
				return err
			}
			lost = false
		}
		rec = iss.Ledger.NewOrderRecord(name, iss.Method)
		if err := iss.Ledger.Put(ctx, rec.Key, rec); err != nil {
			return err
		}
		iss.Ledger.SetLive(rec.Key, true)
		defer iss.Ledger.SetLive(rec.Key, false)
		v, err := iss.Client.RequestVerification(ctx, name, iss.Method)
		if err != nil {
			lost, lostErr = r.sendFailed(ctx, rec.Key, err), err
			return err
		}
		iss.Ledger.Seen(v.OrderID, 0)
		r.verificationRequested(name, v)
		rec.Answered(v)
		r.use(rec)
		// An HTTP challenge is stored with its record's answer (Solver):
		// the record is not written twice.
		if iss.Method != api.MethodHTTP {
			if err := iss.Ledger.Put(ctx, rec.Key, rec); err != nil {
				return err
			}
		}
		if !strings.EqualFold(strings.TrimSuffix(v.Domain, "."), name) {
			return fmt.Errorf("SSLCI answered with a verification for %q (order %d)", v.Domain, v.OrderID)
		}
		return nil
	})
	return rec, err
}

// finalize asks for the certificate, recorded first. A lost answer is
// reconciled (its certificate, if made, deleted) before the next try.
func (r *run) finalize(ctx context.Context, names []string, csrPEM []byte) (*api.Certificate, error) {
	iss := r.iss
	var cert *api.Certificate
	var lostErr error
	lost, lists := false, r.policy().Attempts
	err := r.retry(ctx, func() error {
		if lost {
			if err := r.reconcileLost(ctx, ledger.CertOf(r.names), &lists, lostErr); err != nil {
				return err
			}
			lost = false
		}
		rec := iss.Ledger.NewCertRecord(names)
		if err := iss.Ledger.Put(ctx, rec.Key, rec); err != nil {
			return err
		}
		iss.Ledger.SetLive(rec.Key, true)
		c, err := iss.Client.Finalize(ctx, names, csrPEM)
		if err != nil {
			iss.Ledger.SetLive(rec.Key, false)
			lost, lostErr = r.sendFailed(ctx, rec.Key, err), err
			return err
		}
		rec.AnsweredAt = time.Now().UTC()
		r.mu.Lock()
		r.cert = rec
		r.mu.Unlock()
		cert = c
		return nil
	})
	return cert, err
}

// keepAnswer writes the answered record of an HTTP verification that did
// not succeed before its challenge, which held the answer, goes: the
// order is then cancelled, or reconciled later, by its id.
func (r *run) keepAnswer(ctx context.Context, rec *ledger.OrderRecord) {
	if r.iss.Method != api.MethodHTTP {
		return
	}
	if err := r.iss.Ledger.Put(ctx, rec.Key, rec); err != nil {
		r.logger.Warn("updating a ledger record", zap.Error(err))
	}
}

// reconcileLost reconciles what a POST whose answer was lost may have made
// (sc), before it is sent again: a step of its own, so that a failed list
// or deletion does not spend the POST's attempts, within budget, the
// attempts of all the POST's reconciliations together (the policy's). If it
// fails for good, so does the POST's step, with its error (spent).
func (r *run) reconcileLost(ctx context.Context, sc ledger.Scope, budget *int, lostErr error) error {
	if *budget <= 0 {
		return spent{lostErr} // the POST's error: it cannot be sent again unreconciled
	}
	if err := r.retryWithin(ctx, budget, func() error { _, err := r.reconcile(ctx, sc, nil); return err }); err != nil {
		return spent{err}
	}
	return nil
}

// sendFailed settles the record of a request that failed with err: SSLCI
// declined it, so nothing was made and the record goes; or its answer may
// be lost after SSLCI acted (reported true), to be reconciled.
func (r *run) sendFailed(ctx context.Context, key string, err error) (lost bool) {
	if declined(err) {
		r.iss.Ledger.Drop(ctx, key)
		return false
	}
	r.setUnsettled()
	return true
}

// obtained ends the finalize record's life in this call: the certificate
// answered is returned to certmagic, whose metadata for it names the record
// (ledger.Link); nothing is written to the record.
func (r *run) obtained() {
	r.iss.Ledger.SetLive(r.cert.Key, false)
}

// refuse records that our checks refused the certificate answered, and
// deletes it at SSLCI (it is ours and will never be stored).
func (r *run) refuse(ctx context.Context, cert *api.Certificate) {
	rec := r.cert
	rec.State = ledger.StateRefused
	if leaf, err := ledger.ParseLeaf(cert.CertificatePEM); err == nil {
		rec.NotAfter = leaf.NotAfter.UTC()
	}
	err := r.iss.Ledger.Put(ctx, rec.Key, rec)
	r.iss.Ledger.SetLive(rec.Key, false)
	if err == nil {
		ctx, cancel := ledger.Detached(ctx)
		defer cancel()
		_, err = r.iss.Ledger.Reconcile(ctx, ledger.CertOf(r.names), nil, r.iss.Method)
	}
	if err != nil {
		r.setUnsettled()
		r.logger.Warn("deleting the refused certificate at SSLCI; left for a later reconciliation", zap.Error(err))
	}
}

// use makes rec an order of this call: cancelled on the way out unless
// confirmed, and named in the certificate's metadata.
func (r *run) use(rec *ledger.OrderRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.orders[rec.Domain] = rec
}

func (r *run) setUnsettled() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unsettled = true
}
