package sslci

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file holds the two steps of an Issue that create something at
// SSLCI (a verification request makes an order, a finalize a
// certificate), each written to the ledger before it is sent, and the
// retry of a failed step within the Issue. A POST whose answer was lost
// may have been processed: before it is sent again, SSLCI's list tells
// what it made, and that is cancelled or deleted (reconcile.go), so that
// retrying never piles up orders or certificates.

// Retries of one step within an Issue, on top of the API client's own
// (which retries what is safe to repeat without looking: GET, PUT, DELETE,
// and POSTs not processed). certmagic's retry, a minute later, is the last
// resort.
const (
	stepAttempts   = 6
	stepMinBackoff = 250 * time.Millisecond
	stepMaxBackoff = 8 * time.Second
)

// retry runs step until it succeeds, fails for good (transient says), or
// stepAttempts are spent, with jittered doubling back-off; a longer
// Retry-After from SSLCI is waited instead.
func (r *issuance) retry(ctx context.Context, step func() error) error {
	wait := stepMinBackoff
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil || !transient(err) || attempt == stepAttempts || ctx.Err() != nil {
			return err
		}
		d := wait/2 + rand.N(wait/2+1)
		var ae *api.Error
		if errors.As(err, &ae) && ae.RetryAfter > d {
			d = min(ae.RetryAfter, api.DefaultRetryPolicy.MaxRetryAfter)
		}
		r.logger.Warn("SSLCI request failed; retrying within this issuance", zap.Int("attempt", attempt), zap.Duration("retry_in", d), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, stepMaxBackoff)
	}
}

// transient reports whether a failed request may succeed if sent again:
// SSLCI or the way to it failed (5xx, an HTML page, a dropped connection,
// a cut-off or malformed body, a timeout, 429). Not: 4xx (a wrong token,
// a record of another account, a refused check), a redirect, a
// certificate our checks refused, a cancelled context.
func transient(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch ae.Kind {
	case api.ErrServer, api.ErrTransport, api.ErrTimeout, api.ErrMalformed, api.ErrRateLimited:
		return true
	}
	return false
}

// declined reports whether a failed POST was certainly not processed:
// SSLCI declined it (429, 503), refused it (3xx, 4xx, "status": false), or
// the client never sent it. Anything else may have created an order or a
// certificate whose answer was lost.
func declined(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch code := ae.StatusCode; {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return true
	case code >= 300 && code < 500:
		return true
	case code == 0 && ae.Kind == api.ErrRateLimited: // not sent: the client is slowed down
		return true
	}
	return errors.Is(err, api.ErrRejected)
}

// request asks for a verification of name, recorded first. A lost
// answer is reconciled (its order, if made, cancelled) before the next try.
func (r *issuance) request(ctx context.Context, name string) (*orderRecord, error) {
	iss := r.iss
	if err := r.retry(ctx, func() error { return iss.ensureFloor(ctx) }); err != nil {
		return nil, err
	}
	onlyName := scope{names: []string{name}, order: func(o orderRecord) bool { return o.Domain == name }}
	var rec *orderRecord
	lost := false
	err := r.retry(ctx, func() error {
		if lost {
			if _, err := iss.reconcile(ctx, onlyName, nil); err != nil {
				return err
			}
			lost = false
		}
		rec = iss.newOrderRecord(name)
		if err := iss.put(ctx, rec.key, rec); err != nil {
			return err
		}
		iss.setLive(rec.key, true)
		defer iss.setLive(rec.key, false)
		v, err := iss.client.RequestVerification(ctx, name, iss.Method)
		if err != nil {
			lost = r.sendFailed(ctx, rec.key, err)
			return err
		}
		iss.seen(v.OrderID, 0)
		r.verificationRequested(name, v)
		rec.State, rec.OrderID = statePending, v.OrderID
		rec.Chal = &challenge{Token: v.Token, Content: v.Content, FilePath: v.FilePath, RecordName: v.RecordName}
		rec.Method = v.Method
		r.use(rec)
		if err := iss.put(ctx, rec.key, rec); err != nil {
			return err
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
func (r *issuance) finalize(ctx context.Context, names []string, csrPEM []byte) (*api.Certificate, error) {
	iss := r.iss
	var cert *api.Certificate
	lost := false
	err := r.retry(ctx, func() error {
		if lost {
			if _, err := iss.reconcile(ctx, r.sameSet(), nil); err != nil {
				return err
			}
			lost = false
		}
		rec := iss.newCertRecord(names)
		if err := iss.put(ctx, rec.key, rec); err != nil {
			return err
		}
		iss.setLive(rec.key, true)
		c, err := iss.client.Finalize(ctx, names, csrPEM)
		if err != nil {
			iss.setLive(rec.key, false)
			lost = r.sendFailed(ctx, rec.key, err)
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

// sendFailed settles the record of a request that failed with err: SSLCI
// declined it, so nothing was made and the record goes; or its answer may
// be lost after SSLCI acted (reported true), to be reconciled.
func (r *issuance) sendFailed(ctx context.Context, key string, err error) (lost bool) {
	if declined(err) {
		r.iss.drop(ctx, key)
		return false
	}
	r.setUnsettled()
	return true
}

// sameSet is the certificate records for exactly this call's names.
func (r *issuance) sameSet() scope {
	set := slices.Sorted(slices.Values(r.names))
	return scope{names: set[:1], cert: func(c certRecord) bool { return slices.Equal(c.Names, set) }}
}

// obtained records that the certificate answered was returned to certmagic.
func (r *issuance) obtained(ctx context.Context, notAfter time.Time) {
	rec := r.cert
	defer r.iss.setLive(rec.key, false)
	rec.State, rec.NotAfter = stateObtained, notAfter.UTC()
	if err := r.iss.put(ctx, rec.key, rec); err != nil {
		r.logger.Warn("updating a ledger record", zap.Error(err))
	}
}

// refuse records that our checks refused the certificate answered, and
// deletes it at SSLCI (it is ours and will never be stored).
func (r *issuance) refuse(ctx context.Context, cert *api.Certificate) {
	rec := r.cert
	rec.State = stateRefused
	if certs, err := parseCertificates(cert.CertificatePEM); err == nil && len(certs) > 0 {
		rec.NotAfter = certs[0].NotAfter.UTC()
	}
	err := r.iss.put(ctx, rec.key, rec)
	r.iss.setLive(rec.key, false)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, err = r.iss.reconcile(ctx, r.sameSet(), nil)
	}
	if err != nil {
		r.setUnsettled()
		r.logger.Warn("deleting the refused certificate at SSLCI; left for a later reconciliation", zap.Error(err))
	}
}

// use makes rec an order of this call: cancelled on the way out unless
// confirmed, and named in the certificate's metadata.
func (r *issuance) use(rec *orderRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.orders[rec.Domain] = rec
}

func (r *issuance) setUnsettled() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unsettled = true
}
