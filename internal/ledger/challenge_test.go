package ledger

import (
	"context"
	"testing"

	"github.com/sslci/caddy-sslci/api"
)

// For the HTTP method a verification request's answer is kept with its
// challenge, not written into its record again: reading the ledger, a
// record still "sent" takes its answer from the challenge of its own key,
// and a reconciliation resumes that order. A challenge of another record
// (a probe's, another request's) answers nothing; one that cannot be read
// is an error, not "no answer".
func TestAnswerKeptWithChallenge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.ledger.EnsureFloor(ctx); err != nil {
		t.Fatal(err)
	}
	rec := e.ledger.NewOrderRecord("http.test", api.MethodHTTP)
	if err := e.ledger.Put(ctx, rec.Key, rec); err != nil {
		t.Fatal(err)
	}
	v, err := e.ledger.Client.RequestVerification(ctx, "http.test", api.MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}
	rec.Answered(v)
	read := func() OrderRecord {
		t.Helper()
		orders, _, err := e.ledger.Records(ctx)
		if err != nil || len(orders) != 1 {
			t.Fatalf("records: %v, %v", orders, err)
		}
		return orders[0]
	}

	other := *rec
	other.Key = rec.Key + "-another"
	if _, err := e.ledger.StoreChallenge(ctx, v, &other); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.State != StateSent || got.OrderID != 0 {
		t.Errorf("with another record's challenge: %+v, want still sent", got)
	}

	if _, err := e.ledger.StoreChallenge(ctx, v, rec); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.State != StatePending || got.OrderID != v.OrderID || got.Chal == nil || got.Chal.Token != v.Token || got.Key != rec.Key {
		t.Errorf("with its challenge: %+v, want pending, order %d", got, v.OrderID)
	}
	resumed, err := e.ledger.Reconcile(ctx, ForNames([]string{"http.test"}), []string{"http.test"}, api.MethodHTTP)
	if err != nil || resumed["http.test"] == nil || resumed["http.test"].OrderID != v.OrderID {
		t.Errorf("reconciling: %v, %v; want order %d resumed", resumed, err, v.OrderID)
	}

	e.storage.failing(readError("load", "challenge_tokens"))
	if _, _, err := e.ledger.Records(ctx); err == nil {
		t.Error("a challenge that cannot be read: no error")
	}
}
