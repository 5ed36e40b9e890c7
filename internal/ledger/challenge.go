package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/mholt/acmez/v3/acme"

	"github.com/sslci/caddy-sslci/api"
)

// challengeFile is an HTTP challenge as certmagic's handler reads it
// (acme.Challenge's JSON, at Keys.Challenge), with the answered record of
// its order beside it: for the HTTP method the challenge, which has to be
// written anyway, is where the answer of a verification request is kept,
// one write instead of two. The record in the ledger stays "sent" until the
// verification is done; reading it, the ledger takes the answer from here
// (recordsOf). A failed verification writes its answer into the record
// before the challenge goes.
type challengeFile struct {
	acme.Challenge
	RecordKey string       `json:"sslci_record_key,omitempty"`
	Order     *OrderRecord `json:"sslci_order,omitempty"`
}

// StoreChallenge writes v's HTTP challenge where certmagic's handler finds
// it, with rec, the answered record of its order (nil: none, as for a
// probe), and returns its key.
func (l *Ledger) StoreChallenge(ctx context.Context, v *api.Verification, rec *OrderRecord) (string, error) {
	f := challengeFile{Challenge: acme.Challenge{
		Type:             acme.ChallengeTypeHTTP01,
		Token:            v.Token,
		KeyAuthorization: v.Content,
		Identifier:       acme.Identifier{Type: "dns", Value: v.Domain},
	}}
	if rec != nil {
		f.RecordKey, f.Order = rec.Key, rec
	}
	data, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	key := l.Keys.Challenge(v.Domain)
	if err := l.Storage().Store(ctx, key, data); err != nil {
		return "", fmt.Errorf("storing the challenge: %w", err)
	}
	return key, nil
}

// LoadChallenge reads the HTTP challenge presented for domain by any Caddy
// sharing the storage.
func (l *Ledger) LoadChallenge(ctx context.Context, domain string) (acme.Challenge, error) {
	f, err := l.loadChallengeFile(ctx, domain)
	return f.Challenge, err
}

func (l *Ledger) loadChallengeFile(ctx context.Context, domain string) (challengeFile, error) {
	var f challengeFile
	data, err := l.Storage().Load(ctx, l.Keys.Challenge(domain))
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(data, &f)
}

// answered completes r, a record of an HTTP verification request still
// "sent" in the ledger, with the answer its challenge holds, if any. A
// challenge that cannot be read is an error: the answer is unknown, not
// absent.
func (l *Ledger) answered(ctx context.Context, r *OrderRecord) error {
	if r.State != StateSent || r.Method != api.MethodHTTP {
		return nil
	}
	f, err := l.loadChallengeFile(ctx, r.Domain)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil && !isSyntax(err):
		return fmt.Errorf("reading the challenge of the ledger record %s: %w", r.Key, err)
	case err == nil && f.Order != nil && f.RecordKey == r.Key && f.Order.OrderID != 0:
		key := r.Key
		*r = *f.Order
		r.Key = key
	}
	return nil // another order's challenge, a probe's, or a damaged one: no answer
}

func isSyntax(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te)
}
