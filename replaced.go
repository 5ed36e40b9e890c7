package sslci

import (
	"context"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// This file is delete_replaced: once certmagic has stored a renewed
// certificate of this issuer (it then emits cert_obtained with renewal
// true), the certificates it replaced are deleted at SSLCI, in the
// background, as `caddy sslci prune` deletes superseded ones
// (ledger.RemoveUnderLocks): under certmagic's lock of the names, from one
// list made under it, only what the ownership rule proves this Caddy made
// and stored once, and no longer stores. Cost: one GET list, and one
// DELETE per certificate deleted.

// replacedTimeout bounds one renewal's deletions: the wait for the lock,
// the list and the deletes.
const replacedTimeout = 5 * time.Minute

// replacedDeletions are the deletions in flight; Cleanup stops them (a
// certificate left is superseded: the next renewal of its names, or
// prune, deletes it).
type replacedDeletions struct {
	mu      sync.Mutex
	watched map[*certmagic.Config]bool
	ctx     context.Context
	stop    context.CancelFunc
	stopped bool
	wg      sync.WaitGroup
}

// watchRenewals wraps cfg's event handler, once per config, to see the
// renewals of this issuer.
func (iss *Issuer) watchRenewals(cfg *certmagic.Config) {
	if !iss.DeleteReplaced {
		return
	}
	r := &iss.replaced
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.watched[cfg] {
		return
	}
	if r.watched == nil {
		r.watched = make(map[*certmagic.Config]bool)
		r.ctx, r.stop = context.WithCancel(context.Background())
	}
	r.watched[cfg] = true
	next, should := cfg.OnEvent, cfg.ShouldEmitFunc
	cfg.OnEvent = func(ctx context.Context, event string, data map[string]any) error {
		var err error
		if next != nil {
			err = next(ctx, event, data)
		}
		if event == "cert_obtained" && data["renewal"] == true && data["issuer"] == iss.IssuerKey() {
			identifier, _ := data["identifier"].(string)
			certPath, _ := data["certificate_path"].(string)
			iss.startDeleteReplaced(identifier, certPath)
		}
		return err
	}
	if should != nil {
		// certmagic must not skip an event this handler observes.
		cfg.ShouldEmitFunc = func(event string) bool { return event == "cert_obtained" || should(event) }
	}
}

// startDeleteReplaced runs deleteReplaced in the background: certmagic
// still holds the lock of the names, and waits for nothing.
func (iss *Issuer) startDeleteReplaced(identifier, certPath string) {
	r := &iss.replaced
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || certPath == "" {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, replacedTimeout)
		defer cancel()
		iss.deleteReplaced(ctx, identifier, certPath)
	}()
}

// deleteReplaced deletes at SSLCI the certificates the one stored at
// certPath replaced (ledger.DeleteReplaced), and logs each.
func (iss *Issuer) deleteReplaced(ctx context.Context, identifier, certPath string) {
	log := iss.logger.With(zap.String("identifier", identifier))
	removals, err := iss.ledger.DeleteReplaced(ctx, certPath)
	if err != nil {
		log.Warn("delete_replaced: what the renewal replaced is left at SSLCI (`caddy sslci prune` deletes it)",
			zap.String("key", certPath), zap.Error(err))
		return
	}
	for _, r := range removals {
		if r.Done {
			log.Info("deleted at SSLCI the certificate the renewal replaced", zap.Int64("crt_id", r.ID))
		} else {
			log.Warn("delete_replaced: the certificate the renewal replaced is left at SSLCI (`caddy sslci prune` deletes it)",
				zap.Int64("crt_id", r.ID), zap.String("error", r.Error+r.Skipped))
		}
	}
}

// stopReplaced stops the deletions in flight and waits for them (from
// Cleanup).
func (iss *Issuer) stopReplaced() {
	r := &iss.replaced
	r.mu.Lock()
	r.stopped = true
	if r.stop != nil {
		r.stop()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
