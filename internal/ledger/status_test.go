package ledger

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// certPEM is a self-signed certificate for names, valid from notBefore to
// notAfter: what the status reads from a stored certificate is its names
// and validity, not its chain.
func certPEM(t *testing.T, notBefore, notAfter time.Time, names ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: names, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func (e *env) put(key string, v any) {
	e.t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.storage.FileStorage.Store(context.Background(), key, data); err != nil {
		e.t.Fatal(err)
	}
}

func defaultRatio([]string) float64 { return 0 }

// The renewal rule is certmagic's: remaining time below lifetime × ratio
// (1/3 by default), or below a fiftieth of it or 50 minutes; NotAfter's
// last second still counts as valid.
func TestRenewAt(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		life  time.Duration
		ratio float64
		want  time.Duration // after from
	}{
		{90 * day, 0, 60*day + time.Second*2/3},                          // default 1/3 of 90 days and a second
		{90 * day, 1.0 / 3, 60*day + time.Second*2/3},                    // the same, said
		{30 * day, 0.8, 6*day + time.Second/5},                           // 80% left
		{90 * day, 0.01, 90*day + time.Second - (90*day+time.Second)/50}, // never later than a fiftieth
		{time.Hour, 0, time.Hour + time.Second - 50*time.Minute},         // 20 minutes' window < 50 minutes
	} {
		leaf := Leaf{NotBefore: from, NotAfter: from.Add(tc.life)}
		if got := leaf.RenewAt(tc.ratio).Sub(from); got.Round(time.Millisecond) != tc.want.Round(time.Millisecond) {
			t.Errorf("lifetime %s, ratio %v: renews %s after issuance, want %s", tc.life, tc.ratio, got, tc.want)
		}
	}
	leaf := Leaf{NotBefore: from, NotAfter: from.Add(90 * day)}
	if at := leaf.RenewAt(0); leaf.Due(at, 0) || !leaf.Due(at.Add(time.Nanosecond), 0) {
		t.Error("Due is not strictly after RenewAt")
	}
	if end := leaf.NotAfter.Add(time.Second); leaf.Expired(end) || !leaf.Expired(end.Add(time.Nanosecond)) {
		t.Error("Expired: NotAfter's second is valid, and so is the next instant, as certmagic says")
	}
}

// Status reads each stored certificate (names, validity, renewal, whose
// key, each name's verification and whether the renewal reuses it) and
// the records still to settle, from file storage alone; a read that
// fails is reported in its place, never as nothing stored.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	l := e.ledger
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	day := 24 * time.Hour
	meta := func(keySource string) map[string]any {
		return map[string]any{"sans": []string{}, "issuer_data": map[string]any{"key_source": keySource}}
	}
	verified := func(name string, ago time.Duration) {
		e.put(l.Keys.Verification(name), Verification{Domain: name, OrderID: 7, VerifiedAt: now.Add(-ago)})
	}
	// a.test: 90 days, renewed at day 60, verified a day before issuance: verified again.
	aNotAfter := now.Add(89 * day)
	e.put(l.Keys.SiteCert("a.test"), certPEM(t, now.Add(-day), aNotAfter, "a.test"))
	e.put(l.Keys.SiteMeta("a.test"), meta("sslci"))
	verified("a.test", 2*day)
	// b.test: 30 days, renewed at day 20: the verification is reused.
	e.put(l.Keys.SiteCert("b.test"), certPEM(t, now.Add(-day), now.Add(29*day), "b.test"))
	e.put(l.Keys.SiteMeta("b.test"), meta("csr"))
	verified("b.test", day)
	// c.test and www.c.test: in the renewal window now, no metadata; one
	// name verified 10 days ago (reused now), the other never.
	cNames := NamesKey([]string{"c.test", "www.c.test"})
	cDir := safe(cNames) // its folder: certmagic's names key, made safe
	e.put(l.Keys.SiteCert(cNames), certPEM(t, now.Add(-80*day), now.Add(10*day), "www.c.test", "c.test"))
	verified("c.test", 10*day)
	e.put(l.Keys.Verification("www.c.test"), []byte("{corrupt")) // ignored, as the issuance ignores it

	// Records: a pending order and a refused certificate are unsettled; an
	// obtained certificate now stored and a stored one's history are not.
	order := l.NewOrderRecord("d.test", "http")
	order.State, order.OrderID = StatePending, 1001
	e.put(order.Key, order)
	refused := l.NewCertRecord([]string{"b.test"})
	refused.State = StateRefused
	e.put(refused.Key, refused)
	obtained := l.NewCertRecord([]string{"a.test"})
	obtained.State, obtained.NotAfter = StateObtained, aNotAfter
	e.put(obtained.Key, obtained)
	history := l.NewCertRecord([]string{"c.test", "www.c.test"})
	history.State, history.NotAfter = StateStored, now.Add(10*day)
	e.put(history.Key, history)

	st, err := l.Status(ctx, nil, defaultRatio, now)
	if err != nil {
		t.Fatal(err)
	}
	byDir := map[string]CertStatus{}
	for _, c := range st.Certificates {
		if c.Err != nil || c.KeyErr != nil {
			t.Errorf("%s: %v, %v", c.Dir, c.Err, c.KeyErr)
		}
		byDir[c.Dir] = c
	}
	if len(byDir) != 3 {
		t.Fatalf("certificates %v, want a.test, b.test and %s", byDir, cDir)
	}
	type nameWant struct {
		name   string
		known  bool
		reused bool
	}
	for _, w := range []struct {
		dir       string
		keySource string
		renewIn   time.Duration // from now, rounded to the hour
		names     []nameWant
	}{
		{"a.test", "sslci", 59 * day, []nameWant{{"a.test", true, false}}},
		{"b.test", "csr", 19 * day, []nameWant{{"b.test", true, true}}},
		{cDir, "", -20 * day, []nameWant{{"c.test", true, true}, {"www.c.test", false, false}}},
	} {
		c := byDir[w.dir]
		if c.KeySource != w.keySource {
			t.Errorf("%s: key source %q, want %q", w.dir, c.KeySource, w.keySource)
		}
		if got := c.RenewAt.Sub(now).Round(time.Hour); got != w.renewIn || !c.RenewAt.Equal(c.Leaf.RenewAt(0)) {
			t.Errorf("%s: renews in %s, want %s", w.dir, got, w.renewIn)
		}
		var got []nameWant
		for _, v := range c.Verified {
			got = append(got, nameWant{v.Name, v.Last != nil, v.Reused})
			if v.Err != nil {
				t.Errorf("%s: %v", v.Name, v.Err)
			}
		}
		if !slices.Equal(got, w.names) {
			t.Errorf("%s: verifications %+v, want %+v", w.dir, got, w.names)
		}
	}
	if len(st.Orders) != 1 || st.Orders[0].OrderID != 1001 || len(st.Finalizes) != 1 || st.Finalizes[0].State != StateRefused || st.RecordsErr != nil {
		t.Errorf("unsettled: orders %+v, finalizes %+v (%v); want order 1001 and the refused certificate", st.Orders, st.Finalizes, st.RecordsErr)
	}

	// A ratio of 0.8 renews b.test at day 6: still reused.
	if st, _ := l.Status(ctx, []string{"B.test."}, func([]string) float64 { return 0.8 }, now); len(st.Certificates) != 1 || st.Certificates[0].Dir != "b.test" ||
		st.Certificates[0].RenewAt.Sub(now).Round(time.Hour) != 5*day || !st.Certificates[0].Verified[0].Reused ||
		len(st.Orders) != 0 || len(st.Finalizes) != 1 {
		t.Errorf("status of b.test alone at ratio 0.8: %+v", st)
	}

	// Reads that fail are unknown, each in its place.
	e.storage.failing(func(op, key string) error {
		for _, part := range []string{cDir + ".crt", "verifications/a.test.json", "b.test/b.test.json"} {
			if err := readError("load", part)(op, key); err != nil {
				return err
			}
		}
		return readError("list", "/ledger/orders")(op, key)
	})
	st, err = l.Status(ctx, nil, defaultRatio, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Certificates {
		switch c.Dir {
		case cDir:
			if !errors.Is(c.Err, errStorage) || !c.NotAfter.IsZero() {
				t.Errorf("%s unreadable: %+v", cDir, c)
			}
		case "a.test":
			if !errors.Is(c.Verified[0].Err, errStorage) || c.Verified[0].Reused {
				t.Errorf("a.test's verification unreadable: %+v", c.Verified[0])
			}
		case "b.test":
			if !errors.Is(c.KeyErr, errStorage) || c.KeySource != "" || c.NotAfter.IsZero() {
				t.Errorf("b.test's metadata unreadable: %+v", c)
			}
		}
	}
	if !errors.Is(st.RecordsErr, errStorage) {
		t.Errorf("ledger unreadable: %v", st.RecordsErr)
	}
	e.storage.failing(nil)

	// A stored certificate that does not parse is unknown, with what to do
	// about it; the others are read as before.
	e.put(l.Keys.SiteCert("e.test"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	st, err = l.Status(ctx, nil, defaultRatio, now)
	if err != nil {
		t.Fatal(err)
	}
	var damaged, read int
	for _, c := range st.Certificates {
		switch {
		case c.Dir == "e.test":
			damaged++
			if !errors.Is(c.Err, errDamaged) || !strings.Contains(c.Err.Error(), "does not parse") || !strings.Contains(c.Err.Error(), "remove its folder") {
				t.Errorf("e.test, damaged: %v", c.Err)
			}
		case c.Err == nil:
			read++
		}
	}
	if damaged != 1 || read != 3 {
		t.Errorf("with e.test damaged: %d damaged, %d read, want 1 and 3", damaged, read)
	}

	e.storage.failing(readError("list", "certificates/"))
	if _, err := l.Status(ctx, nil, defaultRatio, now); !errors.Is(err, errStorage) {
		t.Errorf("certificates unlistable: %v, want the read error", err)
	}
}
