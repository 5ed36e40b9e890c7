package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/caddyserver/certmagic"
)

// storeMeta writes the metadata certmagic stores for names, with link in
// its issuer_data, as the issuer returns it.
func (e *env) storeMeta(names []string, link Link) {
	e.t.Helper()
	issuerData, err := json.Marshal(struct {
		Endpoint string `json:"endpoint"`
		Link
	}{"https://sslci.test", link})
	if err != nil {
		e.t.Fatal(err)
	}
	meta, err := json.Marshal(certmagic.CertificateResource{SANs: names, IssuerData: issuerData})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.storage.FileStorage.Store(context.Background(), e.ledger.Keys.SiteMeta(NamesKey(names)), meta); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) records() []CertRecord {
	e.t.Helper()
	_, certs, err := e.ledger.Records(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return certs
}

// A finalize record is written once: the metadata certmagic stores with
// the certificate names it (Link). So linked, it reads as "obtained"
// with the certificate's not_after, and the sweep and a reconciliation
// keep the certificate and mark the record stored, as history for after
// the renewal. A record whose certificate was never stored (a crash after
// the answer) stays "sent" and its certificate goes as a lost answer's.
// Metadata naming another record (the key storage's repair writes one
// without a link) links nothing; metadata that cannot be read is unknown:
// the pass fails and deletes nothing.
func TestLinkedRecord(t *testing.T) {
	names := []string{"a.test"}
	for _, pass := range passes {
		t.Run(pass.name+"/stored", func(t *testing.T) {
			e := newEnv(t)
			rec, certPEM := e.finalize("a.test")
			leaf, err := ParseLeaf(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			e.store(names, certPEM)
			e.storeMeta(names, Link{Record: rec.Key, NotAfter: leaf.NotAfter})
			if got := e.records(); len(got) != 1 || got[0].State != StateObtained || !got[0].NotAfter.Equal(leaf.NotAfter) {
				t.Fatalf("the linked record reads as %+v, want obtained, not_after %s", got, leaf.NotAfter)
			}
			keepsCertificates(t, e, pass.name, pass.run)
			if got := e.records(); len(got) != 1 || got[0].State != StateStored || !got[0].NotAfter.Equal(leaf.NotAfter) {
				t.Errorf("after the %s, the record is %+v, want it stored, as history", pass.name, got)
			}
		})
		t.Run(pass.name+"/never stored", func(t *testing.T) {
			e := newEnv(t)
			e.finalize("a.test")
			if err := pass.run(e); err != nil {
				t.Fatal(err)
			}
			if c := e.certificates(); len(c["a.test"]) != 0 {
				t.Errorf("the %s left the certificate never stored at SSLCI: %v", pass.name, c)
			}
			if got := e.records(); len(got) != 0 {
				t.Errorf("records left: %+v", got)
			}
		})
		t.Run(pass.name+"/linked to another record", func(t *testing.T) {
			e := newEnv(t)
			_, certPEM := e.finalize("a.test")
			e.store(names, certPEM)
			leaf, _ := ParseLeaf(certPEM)
			e.storeMeta(names, Link{Record: "another", NotAfter: leaf.NotAfter})
			if got := e.records(); len(got) != 1 || got[0].State != StateSent {
				t.Fatalf("a record the metadata does not name reads as %+v, want sent", got)
			}
			keepsCertificates(t, e, pass.name, pass.run)
		})
		t.Run(pass.name+"/metadata unreadable", func(t *testing.T) {
			e := newEnv(t)
			e.finalize("a.test") // never stored: the pass would delete its certificate
			e.storeMeta(names, Link{Record: "another"})
			e.storage.failing(readError("load", "a.test/a.test.json"))
			before := e.certificates()
			if err := pass.run(e); !errors.Is(err, errStorage) {
				t.Errorf("the %s with the metadata unreadable: %v, want the read error", pass.name, err)
			}
			if after := e.certificates(); !maps.EqualFunc(after, before, slices.Equal) {
				t.Errorf("the %s deleted a certificate while it could not read the metadata: %v before, %v after", pass.name, before, after)
			}
			e.storage.failing(nil)
			if got := e.records(); len(got) != 1 || got[0].State != StateSent {
				t.Errorf("the record is %+v, want it left as it was", got)
			}
		})
	}
}
