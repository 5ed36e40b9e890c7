package sslci

import (
	"context"

	"github.com/sslci/caddy-sslci/api"
)

// ledgerView is what this Caddy knows of the records it created at SSLCI:
// the issuer's ledger. The commands decide nothing about ownership
// themselves: they ask the issuer's own rule.
type ledgerView interface {
	certificate(c api.CertificateInfo) ownedRecord
	order(o api.OrderInfo) ownedRecord
}

// ownedRecord is what the ledger says of one record at SSLCI.
type ownedRecord struct {
	ours    bool // this Caddy created it, provably
	refused bool // a certificate the issuer's checks refused
	recent  bool // created moments ago: an issuance may still be using it
}

// ledger returns the ledger of the target's account in its storage.
func (t *target) ledger(context.Context) ledgerView {
	return noLedger{}
}

// noLedger proves nothing ours.
type noLedger struct{}

func (noLedger) certificate(api.CertificateInfo) ownedRecord { return ownedRecord{} }
func (noLedger) order(api.OrderInfo) ownedRecord             { return ownedRecord{} }
