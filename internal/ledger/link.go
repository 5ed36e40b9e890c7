package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// linked completes r, a finalize record still "sent", from the metadata
// stored for its names, if that metadata names it. Metadata that cannot
// be read is an error: whether r's certificate is stored is unknown, not
// "no".
func (l *Ledger) linked(ctx context.Context, r *CertRecord) error {
	if r.State != StateSent {
		return nil
	}
	data, err := l.Storage().Load(ctx, l.Keys.SiteMeta(NamesKey(r.Names)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the metadata of the stored certificate of the ledger record %s: %w", r.Key, err)
	}
	var meta struct {
		IssuerData Link `json:"issuer_data"`
	}
	if json.Unmarshal(data, &meta) != nil {
		return nil // damaged metadata links nothing; certmagic reports it
	}
	if link := meta.IssuerData; link.Record == r.Key && !link.NotAfter.IsZero() {
		r.State, r.NotAfter = StateObtained, link.NotAfter.UTC()
	}
	return nil
}
