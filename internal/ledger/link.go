package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A finalize record is written once, before the finalize is sent. What its
// answer was is not written to it: the issuer puts a Link in the metadata
// that certmagic stores with the certificate (issuer_data), so that a
// stored certificate names the record that obtained it. Reading the
// ledger (readRecords) completes a "sent" record that a stored metadata
// links to: it reads as "obtained", with the certificate's not_after, as
// if its answer had been written into it, and every rule that reads
// records sees the same. A record whose certificate was never stored (a
// crash after the answer, a write that failed) stays "sent": an answer
// lost, settled by the count rule (ownership.go). That update of the
// record was one of the issuer's three writes per new name.

// Link is the part of the issuer's metadata that names the finalize
// record of a stored certificate.
type Link struct {
	Record   string    `json:"ledger_record,omitempty"` // the record's storage key
	NotAfter time.Time `json:"not_after,omitzero"`      // the certificate's
}

// issuerData is what the ledger reads of the issuer's metadata that
// certmagic stores with a certificate (issuance.Metadata, in issuer_data).
type issuerData struct {
	KeySource string `json:"key_source"`
	Link
}

// readIssuerData reads the issuer's metadata stored for a names key (or
// its folder): nil if there is none; an error wrapping ErrCorrupt if it
// does not parse; another error if storage cannot say.
func (l *Ledger) readIssuerData(ctx context.Context, namesKey string) (*issuerData, error) {
	var meta struct {
		IssuerData issuerData `json:"issuer_data"`
	}
	if found, err := l.loadJSON(ctx, l.Keys.SiteMeta(namesKey), "the metadata of the stored certificate "+namesKey, &meta); !found {
		return nil, err
	}
	return &meta.IssuerData, nil
}

// linked completes r, a finalize record still "sent", from the metadata
// stored for its names, if that metadata names it. Metadata that cannot
// be read is an error: whether r's certificate is stored is unknown, not
// "no". Metadata that does not parse links nothing (certmagic reports it).
func (l *Ledger) linked(ctx context.Context, r *CertRecord) error {
	if r.State != StateSent {
		return nil
	}
	d, err := l.readIssuerData(ctx, NamesKey(r.Names))
	switch {
	case errors.Is(err, ErrCorrupt) || d == nil && err == nil:
		return nil
	case err != nil:
		return fmt.Errorf("the ledger record %s: %w", r.Key, err)
	}
	if d.Record == r.Key && !d.NotAfter.IsZero() {
		r.State, r.NotAfter = StateObtained, d.NotAfter.UTC()
	}
	return nil
}
