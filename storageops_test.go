package sslci_test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// opCounts counts storage operations by who made them (certmagic's calls
// to the storage, or the issuer's own operations), by operation and by
// what the key holds.
type opCounts struct {
	mu   sync.Mutex
	ops  map[string]int // "certmagic load site", "issuer store record", ...
	last time.Time
}

func (c *opCounts) saw(who string) func(op, key string) {
	return func(op, key string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if kind := keyKind(key); kind != "floor" {
			c.ops[who+" "+op+" "+kind]++
		}
		c.last = time.Now()
	}
}

// keyKind is what a storage key holds, for the tables.
func keyKind(key string) string {
	switch {
	case strings.HasPrefix(key, "issue_cert_"):
		return "lock"
	case strings.Contains(key, "/ledger/floor"):
		return "floor"
	case strings.Contains(key, "/ledger/"):
		return "record"
	case strings.Contains(key, "/verifications/"):
		return "verification"
	case strings.Contains(key, "/challenge_tokens/"):
		return "challenge"
	case strings.HasPrefix(key, "sslci/") && strings.Contains(key, "/keys/"):
		return "kept-key"
	case strings.HasPrefix(key, "certificates/"):
		return "site"
	case strings.HasPrefix(key, "rw_test_"):
		return "rw-test" // certmagic's check that the storage is writable
	case strings.HasPrefix(key, "ocsp/"):
		return "ocsp"
	}
	return "other:" + key
}

// take returns the counts since the last take, once no operation has come
// for a while (what the phase set off has settled).
func (c *opCounts) take() map[string]int {
	for {
		time.Sleep(50 * time.Millisecond)
		c.mu.Lock()
		quiet := time.Since(c.last) > 400*time.Millisecond
		var got map[string]int
		if quiet {
			got, c.ops = c.ops, make(map[string]int)
		}
		c.mu.Unlock()
		if quiet {
			return got
		}
	}
}

func total(m map[string]int, who string) (n int) {
	for k, v := range m {
		if strings.HasPrefix(k, who+" ") {
			n += v
		}
	}
	return n
}

func format(m map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\n\t%-40s %d", k, m[k])
	}
	return b.String()
}

// The storage operations one certificate costs, counted exactly:
// certmagic's calls to the storage apart from the issuer's own operations,
// for a new name, a start that loads the stored certificate, a renewal
// that reuses the verification, and one that verifies again. The figures
// are in the README's scale section; a change to them is a change of the
// issuer's cost per name, to be made on purpose.
func TestStorageOpsPerCertificate(t *testing.T) {
	// The sweep after the start, and the id floor (written once per burst
	// of issuances, a second after it rises), are not per certificate: the
	// floor's operations are left out.
	t.Cleanup(sslci.SetSweepDelay(time.Hour))
	// The expiry watch lists storage once the index has been quiet this
	// long: after the phase's certificate is stored (tens of ms), and each
	// phase waits for that listing (expiryRead) before its counts are taken.
	t.Cleanup(sslci.SetExpiryQuiet(500 * time.Millisecond))
	c := &opCounts{ops: make(map[string]int)}
	t.Cleanup(sslci.CountStorageOps(c.saw("issuer"), c.saw("certmagic")))

	// An hour's certificates: with a renewal window ratio of 0.99 a start
	// finds the stored one due (and its renewal due too, but the next
	// check is renew_interval away).
	e := newEnv(t, sslcitest.Options{Validity: time.Hour})
	const name = "ops.test"
	plain := e.siteConfig("", name, "")
	due := bytes.Replace(plain, []byte(`"issuers"`), []byte(`"renewal_window_ratio":0.99,"issuers"`), 1)

	// certmagic's own operations for a certificate it obtains: its writes
	// (the three files, its lock, a file to check that the storage is
	// writable) and its reads (whether a certificate is stored, the
	// stapled OCSP response, what it stored, read back), with more reads
	// for a renewal (the previous certificate, its OCSP response) and, for
	// a verification, two loads of the challenge by its HTTP handler, as
	// SSLCI's check comes.
	obtains := map[string]int{"store site": 3, "store rw-test": 1, "load rw-test": 1, "delete rw-test": 1, "lock lock": 1, "unlock lock": 1}
	with := func(m map[string]int, more map[string]int) map[string]int {
		m = maps.Clone(m)
		maps.Copy(m, more)
		return m
	}
	phases := []struct {
		phase  string
		renews bool
		before func()
		// The issuer's operations; certmagic's; the API requests.
		issuer, certmagic map[string]int
		requests          map[sslcitest.Op]int
	}{
		{phase: "new name, renewed within 28 days", issuer: map[string]int{
			// reconciling what earlier attempts left: none
			"list record": 2, "stat record": 2,
			// the verification: its order recorded before the request, the
			// challenge (with the answer), the record of its success; the
			// finalize recorded before it is sent (its answer is in the
			// metadata certmagic stores, ledger.Link)
			"load verification": 1, "store record": 2, "delete record": 1,
			"store challenge": 1, "delete challenge": 1, "store verification": 1,
			// SSLCI's key is not kept (certmagic writes it first); what a
			// stopped Caddy kept for the site is looked for once the set is
			// stored; the key checked against the certificate as certmagic
			// loads it
			"list kept-key": 1, "load site": 4,
			// the expiry metrics list what is stored once certmagic's loads
			// and writes are done, and load what it did not: here nothing
			"list site": 1,
		}, certmagic: with(obtains, map[string]int{"exists site": 2, "load site": 4, "load ocsp": 1, "load challenge": 2}),
			// the list is the id floor's, once per account and storage
			requests: map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1}},
		{phase: "start, certificate loaded", issuer: map[string]int{"load site": 2, "list site": 1},
			certmagic: map[string]int{"load site": 3, "load ocsp": 1}, requests: map[sslcitest.Op]int{}},
		{phase: "start, renewal reusing the verification", renews: true, issuer: map[string]int{
			// the previous finalize record, read with the metadata that links
			// it to the stored certificate, and marked stored (history)
			"load site": 8, "list site": 1, "list record": 2, "load record": 1, "store record": 2, "load verification": 1,
			// the previous certificate's key, kept while certmagic overwrites it
			"store kept-key": 1, "list kept-key": 1, "delete kept-key": 1,
		}, certmagic: with(obtains, map[string]int{"exists site": 3, "load site": 9, "load ocsp": 2}),
			requests: map[sslcitest.Op]int{sslcitest.OpFinalize: 1}},
		{phase: "start, renewal verifying again", renews: true, before: func() {
			e.sim.ExpireVerifications()
			dirs, _ := filepath.Glob(filepath.Join(e.storageDir, "sslci", "*", "*", "verifications"))
			for _, d := range dirs {
				os.RemoveAll(d)
			}
		}, issuer: map[string]int{
			"load site": 8, "list site": 1, "list record": 2, "load record": 2, "store record": 3, "delete record": 1,
			"load verification": 1, "store verification": 1,
			"store challenge": 1, "delete challenge": 1, "store kept-key": 1, "list kept-key": 1, "delete kept-key": 1,
		}, certmagic: with(obtains, map[string]int{"exists site": 3, "load site": 9, "load ocsp": 2, "load challenge": 2}),
			requests: map[sslcitest.Op]int{sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1}},
	}
	parses := sslci.PairParses()
	var serial []byte
	for i, p := range phases {
		if i > 0 {
			e.stopCaddy()
			c.take()
		}
		if p.before != nil {
			p.before()
		}
		e.sim.ResetRequests()
		cfg, notSerial := plain, []byte(nil)
		if p.renews {
			cfg, notSerial = due, serial
		}
		e.startCaddy(cfg)
		leaf := e.waitForCertificate(name, notSerial, time.Minute)
		expiryRead(t)
		got := c.take()
		if !p.renews && serial != nil && !bytes.Equal(leaf.SerialNumber.Bytes(), serial) {
			t.Errorf("%s: a new certificate is served", p.phase)
		}
		serial = leaf.SerialNumber.Bytes()
		checkOps(t, p.phase, got, p.issuer, p.certmagic)
		if requests := e.counts(); !maps.Equal(requests, p.requests) {
			t.Errorf("%s: the API requests are %v, want %v", p.phase, requests, p.requests)
		}
		t.Logf("%s: certmagic %d, issuer %d, API requests %v:%s", p.phase, total(got, "certmagic"), total(got, "issuer"), e.counts(), format(got))
		if i == 0 {
			// A running Caddy stores the id floor a second after it rises;
			// the next starts read it rather than list the account.
			waitForFile(t, filepath.Join(e.storageDir, "sslci", "*", "*", "ledger", "floor.json"))
		}
	}
	// The key storage checks a pair as it is written and as certmagic
	// loads it (11 checks here), but parses each of the 3 pairs once.
	if n := sslci.PairParses() - parses; n != 3 {
		t.Errorf("the key storage parsed %d key pairs, want 3: one per certificate", n)
	}

	// A new name with SSLCI's 90-day certificates: renewed at day 60, past
	// the 28 days a verification is reused, it stores no verification
	// record (ledger.Verification.WorthStoring).
	e.stopCaddy()
	c.take()
	e90 := newEnv(t, sslcitest.Options{})
	e90.startCaddy(e90.siteConfig("", name, ""))
	e90.waitForCertificate(name, nil, time.Minute)
	expiryRead(t)
	got := c.take()
	want := maps.Clone(phases[0].issuer)
	delete(want, "store verification")
	checkOps(t, "new name, 90-day certificate", got, want, phases[0].certmagic)
	if requests := e90.counts(); !maps.Equal(requests, phases[0].requests) {
		t.Errorf("new name, 90-day certificate: the API requests are %v, want %v", requests, phases[0].requests)
	}
	t.Logf("new name, 90-day certificate: certmagic %d, issuer %d, API requests %v:%s", total(got, "certmagic"), total(got, "issuer"), e90.counts(), format(got))
}

// expiryRead waits until the expiry watch of the running config has read
// its storage.
func expiryRead(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		issuers := activeIssuers(t)
		if len(issuers) > 0 && issuers[0].ExpiryRead() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the expiry watch did not read storage within a minute")
		}
	}
}

// checkOps compares the counts of one phase, split by who made them, with
// what is wanted of the issuer and of certmagic.
func checkOps(t *testing.T, phase string, counts, issuer, certmagic map[string]int) {
	t.Helper()
	got := map[string]map[string]int{"issuer": {}, "certmagic": {}}
	for k, n := range counts {
		who, op, _ := strings.Cut(k, " ")
		got[who][op] += n
	}
	if !maps.Equal(got["issuer"], issuer) {
		t.Errorf("%s: the issuer's storage operations are\n%v\nwant\n%v", phase, got["issuer"], issuer)
	}
	if !maps.Equal(got["certmagic"], certmagic) {
		t.Errorf("%s: certmagic's storage operations are\n%v\nwant\n%v", phase, got["certmagic"], certmagic)
	}
}

// waitForFile waits until a file matches pattern.
func waitForFile(t *testing.T, pattern string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no file %s within 30 s", pattern)
		}
	}
}
