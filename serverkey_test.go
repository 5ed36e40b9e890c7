package sslci_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

const (
	logInstalled = "installed the kept private key of the certificate"
	logRemoved   = "removed a stored certificate whose private key was not its own"
)

// certmagic writes the key, then the certificate, then the metadata, under
// StorageKeys' names: the key certmagic writes is already SSLCI's (so no
// copy of it is kept), and a kept key left for the site goes once the set
// is stored (its metadata last). This fails if certmagic changes its
// layout or order.
func TestKeyStoredBeforeCertificate(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	plan := newFaultPlan(0, failWrite)
	name := "order.test"
	// Kept keys whose certificate never came (a Caddy stopped before
	// certmagic stored it): this site's goes once its set is complete;
	// another site's, whose set is not, stays.
	keysDir := path.Join("sslci", certmagic.StorageKeys.Safe(e.issuerKey()), "keys")
	never := strings.Repeat("ab", 32) + "-" + fmt.Sprint(time.Now().Add(90*24*time.Hour).Unix()) + ".pem"
	stale, recent := path.Join(keysDir, name, never), path.Join(keysDir, "other.test", never)
	writeFile(t, e.storageDir, stale, foreignKeyPEM(t))
	writeFile(t, e.storageDir, recent, foreignKeyPEM(t))
	e.startCaddy(e.withStorage(e.withLog(e.siteConfig("", name, "")), faultStorageConfig(t, e.storageDir, plan)))
	leaf := e.waitForCertificate(name, nil, time.Minute)
	e.stopCaddy()

	ik := e.issuerKey()
	want := []string{
		"store " + certmagic.StorageKeys.SitePrivateKey(ik, name),
		"store " + certmagic.StorageKeys.SiteCert(ik, name),
		"store " + certmagic.StorageKeys.SiteMeta(ik, name),
		"delete " + stale,
	}
	var got []string
	var keyPEM []byte
	for _, w := range plan.recorded() {
		op := w.op + " " + w.key
		if slices.Contains(want, op) {
			got = append(got, op)
		}
		if op == want[0] {
			keyPEM = w.value
		}
		if w.op == "store" && strings.HasPrefix(w.key, keysDir+"/") {
			t.Errorf("a first issuance kept a key: %s", op)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("writes of the key, certificate and metadata:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), keyPEM); err != nil {
		t.Errorf("the key written before the certificate is not the certificate's: %v", err)
	}
	if meta := e.storedMetadata(name); meta["key_source"] != "sslci" {
		t.Errorf("key_source = %v, want sslci", meta["key_source"])
	}
	if files := filesUnder(e.storageDir, keysDir); !slices.Equal(files, []string{recent}) {
		t.Errorf("kept keys left: %v, want only %s", files, recent)
	}
}

// obtainThenForeignKey runs a Caddy until it serves name, stops it, and
// writes a foreign key beside the stored certificate; it returns the
// config, the certificate and the key that was stored (SSLCI's).
func (e *testEnv) obtainThenForeignKey(name string) (cfg []byte, first *x509.Certificate, sslciKey []byte) {
	e.t.Helper()
	cfg = e.withLog(e.siteConfig("", name, ""))
	e.startCaddy(cfg)
	first = e.waitForCertificate(name, nil, time.Minute)
	e.stopCaddy()
	_, sslciKey, err := e.storedPair(e.storageDir, name)
	if err != nil {
		e.t.Fatalf("after the first run: %v", err)
	}
	writeFile(e.t, e.storageDir, certmagic.StorageKeys.SitePrivateKey(e.issuerKey(), name), foreignKeyPEM(e.t))
	return cfg, first, sslciKey
}

// A certificate stored beside a key that is not its own (a renewal cut
// between its key and its certificate, a crash of an older version, a hand
// edit) is repaired when a fresh Caddy loads it: with the certificate's key
// kept in storage it is installed and the certificate served; without, the
// set is removed and a new certificate obtained.
func TestForeignKeyRepairedAtStart(t *testing.T) {
	for _, withKept := range []bool{true, false} {
		t.Run(fmt.Sprintf("kept=%v", withKept), func(t *testing.T) {
			e := newEnv(t, sslcitest.Options{})
			name := "repair.test"
			cfg, first, sslciKey := e.obtainThenForeignKey(name)
			if withKept {
				writeFile(t, e.storageDir, e.keptKeyPath(first), sslciKey)
			}
			finalizes := e.sim.CountRequests(sslcitest.OpFinalize)

			e.newLog()
			e.startCaddy(e.withLog(cfg))
			served := e.waitForCertificate(name, nil, time.Minute)
			if _, _, err := e.storedPair(e.storageDir, name); err != nil {
				t.Errorf("stored pair after the repair: %v", err)
			}
			newFinalizes := e.sim.CountRequests(sslcitest.OpFinalize) - finalizes
			if withKept {
				if !served.Equal(first) || newFinalizes != 0 {
					t.Errorf("served serial %x (first %x) after %d finalizes; want the first certificate, no new one", served.SerialNumber, first.SerialNumber, newFinalizes)
				}
				if !e.logHas(logInstalled) || !e.logHas(`"identifier":"repair.test"`) {
					t.Errorf("the log does not say the kept key was installed for %s", name)
				}
				if files := filesUnder(e.storageDir, path.Dir(e.keptKeyPath(first))); len(files) != 0 {
					t.Errorf("kept keys left: %v", files)
				}
			} else {
				if served.Equal(first) || newFinalizes != 1 {
					t.Errorf("served serial %x (first %x) after %d finalizes; want a new certificate", served.SerialNumber, first.SerialNumber, newFinalizes)
				}
				if !e.logHas(logRemoved) {
					t.Errorf("the log does not say the unusable certificate was removed")
				}
			}
		})
	}
}

// A kept key that cannot be read (an error other than "not exist"), or
// whose folder's listing is cut short (Caddy's file storage says "not
// exist" then, while the folder is there), is not a kept key that is
// absent: the mismatched set is left as it is, and once storage answers
// again the kept key is installed and the first certificate served, with
// no new one obtained.
func TestKeptKeyUnreadableIsNotAbsent(t *testing.T) {
	defer sslci.SetRepairRetryDelay(100 * time.Millisecond)()
	for _, tc := range []struct {
		what string
		fail func(op, key, kept string) error
	}{
		{"load fails", func(op, key, kept string) error {
			if op == "load" && key == kept {
				return errInjected
			}
			return nil
		}},
		{"listing cut short", func(op, key, kept string) error {
			if op == "list" && strings.TrimSuffix(key, "/") == path.Dir(kept) {
				return fs.ErrNotExist
			}
			return nil
		}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			e := newEnv(t, sslcitest.Options{})
			name := "unreadable.test"
			cfg, first, sslciKey := e.obtainThenForeignKey(name)
			kept := e.keptKeyPath(first)
			writeFile(t, e.storageDir, kept, sslciKey)
			finalizes := e.sim.CountRequests(sslcitest.OpFinalize)

			plan := newFaultPlan(0, failWrite)
			var failed atomic.Int32
			plan.setFailRead(func(op, key string) error {
				err := tc.fail(op, key, kept)
				if err != nil {
					failed.Add(1)
				}
				return err
			})
			e.newLog()
			e.startCaddy(e.withStorage(e.withLog(cfg), faultStorageConfig(t, e.storageDir, plan)))
			for deadline := time.Now().Add(30 * time.Second); failed.Load() == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("Caddy never read the kept key")
				}
			}
			certPEM, _, _ := e.storedPair(e.storageDir, name)
			if certPEM == nil || !leafOf(t, certPEM).Equal(first) || !slices.Contains(filesUnder(e.storageDir, path.Dir(kept)), kept) {
				t.Fatalf("with the kept key unreadable, the set or the kept key was removed")
			}

			plan.setFailRead(nil)
			served := e.waitForCertificate(name, nil, time.Minute)
			if !served.Equal(first) {
				t.Errorf("served serial %x, want the first certificate %x, repaired with its kept key", served.SerialNumber, first.SerialNumber)
			}
			if n := e.sim.CountRequests(sslcitest.OpFinalize) - finalizes; n != 0 {
				t.Errorf("%d new certificates obtained; want none", n)
			}
			if e.logHas(logRemoved) || !e.logHas(logInstalled) {
				t.Errorf("the log does not say the kept key was installed, or says the set was removed")
			}
		})
	}
}

// A running Caddy whose certificate is due finds in storage a newer one,
// renewed by a peer that died before its key was in place: it repairs the
// pair and serves a good certificate without a restart.
func TestPeerRepairsWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	for _, withKept := range []bool{true, false} {
		t.Run(fmt.Sprintf("kept=%v", withKept), func(t *testing.T) {
			// Certificates live 90s (30s past a notBefore backdated by a
			// minute); Caddy wants to renew about 2s after issuance (when
			// 31% of 90s is left): time enough to store the peer's first.
			e := newEnv(t, sslcitest.Options{Validity: 30 * time.Second})
			name := "peer.test"
			cfg := e.withLog(e.siteConfig("renew_interval 1s", name, ""))
			e.startCaddy(bytes.Replace(cfg, []byte(`"issuers"`), []byte(`"renewal_window_ratio":0.31,"issuers"`), 1))
			first := e.waitForCertificate(name, nil, time.Minute)

			// The peer's certificate, made 40s later as SSLCI sees it (so it
			// is not due when this Caddy looks), stored with a foreign key.
			csr, _ := sslcitest.NewCSR(t, name)
			client, err := api.New(e.sim.URL(), e.sim.Token())
			if err != nil {
				t.Fatal(err)
			}
			e.sim.Advance(40 * time.Second)
			peer, err := client.Finalize(context.Background(), []string{name}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
			e.sim.Advance(-40 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			peerLeaf := leafOf(t, peer.CertificatePEM)
			if withKept {
				writeFile(t, e.storageDir, e.keptKeyPath(peerLeaf), peer.PrivateKeyPEM)
			}
			ik := e.issuerKey()
			writeFile(t, e.storageDir, certmagic.StorageKeys.SiteCert(ik, name), append(peer.CertificatePEM, peer.CAPEM...))
			writeFile(t, e.storageDir, certmagic.StorageKeys.SitePrivateKey(ik, name), foreignKeyPEM(t))

			// Before the first certificate expires: without the repair, the
			// pair stays unusable until the peer's certificate is due.
			served := e.waitForCertificate(name, first.SerialNumber.Bytes(), time.Until(first.NotAfter))
			if withKept {
				if !served.Equal(peerLeaf) {
					t.Errorf("served serial %x, want the peer's %x with its kept key", served.SerialNumber, peerLeaf.SerialNumber)
				}
				if !e.logHas(logInstalled) {
					t.Error("the log does not say the kept key was installed")
				}
			} else {
				if served.Equal(peerLeaf) {
					t.Error("the peer's certificate is served, though its key is lost")
				}
				if !e.logHas(logRemoved) {
					t.Error("the log does not say the unusable certificate was removed")
				}
			}
			if _, _, err := e.storedPair(e.storageDir, name); err != nil {
				t.Errorf("stored pair: %v", err)
			}
		})
	}
}

// A storage that fails, or stops answering for good (a kill -9), at any one
// write of a first issuance of two names, or of their renewal, leaves
// storage from which a fresh Caddy with SSLCI unreachable serves every name
// that has a valid certificate in storage (during a renewal: every name,
// with the previous certificate if need be), and then, SSLCI back, a fresh
// Caddy serves every name, with its key stored beside it; a renewal ends
// with nothing pending at SSLCI and no key kept in storage.
func TestStorageFaultAtEveryWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy three times per write")
	}
	// The kept keys a stopped Caddy left go 200ms after the start, once the
	// start's own issuances are done (the sweep takes their names' locks).
	defer sslci.SetSweepDelay(200 * time.Millisecond)()
	names := []string{"one.test", "two.test"}
	for _, phase := range []string{"issuance", "renewal"} {
		t.Run(phase, func(t *testing.T) {
			e := newEnv(t, sslcitest.Options{VerificationWindow: 400 * 24 * time.Hour})
			snapshot := t.TempDir()
			renewal := phase == "renewal"
			if renewal {
				// Certificates SSLCI made 89 days ago: a day left of 90, so
				// Caddy renews them when it starts.
				e.sim.Advance(-89 * 24 * time.Hour)
				e.faultRun(t, snapshot, newFaultPlan(0, failWrite), names, false)
				e.stopCaddy()
				e.sim.Advance(89 * 24 * time.Hour)
			}

			clean := newFaultPlan(0, failWrite)
			e.faultRun(t, copyDir(t, snapshot), clean, names, renewal)
			clean.waitQuiet(time.Second)
			e.stopCaddy()
			clean.release()
			writes := clean.recorded()
			for i, w := range writes {
				t.Logf("write %d: %s %s", i+1, w.op, w.key)
			}

			var tried, unservable, offline int
			for _, mode := range []faultMode{failWrite, killWrites} {
				for k := 1; k <= len(writes); k++ {
					dir := copyDir(t, snapshot)
					plan := newFaultPlan(k, mode)
					e.startCaddy(e.faultConfig(t, dir, plan, "", names))
					// A run may make fewer writes than the clean one (the
					// last ones race): once every name is served and no write
					// comes, this write never will.
					served := make(chan struct{})
					go func() {
						defer close(served)
						for _, name := range names {
							if e.waitServed(dir, name, renewal, 30*time.Second) != nil {
								return
							}
						}
						plan.waitQuiet(30 * time.Millisecond)
					}()
					select {
					case <-plan.tripped:
					case <-served:
						select {
						case <-plan.tripped:
						default:
							t.Logf("%v: write %d never came (%d writes)", mode, k, len(plan.recorded()))
						}
					}

					if mode != killWrites {
						plan.waitQuiet(30 * time.Millisecond)
					}
					e.stopCaddy()
					plan.release()
					tried++
					// The writes race: this run's write k may not be the clean run's.
					got := plan.recorded()
					at := "none"
					if k <= len(got) {
						at = got[k-1].op + " " + got[k-1].key
					}

					// SSLCI unreachable (every request answered 500): every
					// name with a valid certificate in storage is served, the
					// previous one if the renewal was cut.
					withCert := e.validCertificates(dir, names)
					if len(withCert) > 0 {
						e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultServerError, 1<<30)
						down := newFaultPlan(0, failWrite)
						e.newLog()
						e.startCaddy(e.faultConfig(t, dir, down, "", names))
						for _, name := range withCert {
							if err := e.waitServed(dir, name, false, 30*time.Second); err != nil {
								offline++
								t.Errorf("%v at write %d (in this run: %s; in the clean run: %s %s), SSLCI unreachable: %s has a valid certificate in storage but is not served: %v; "+
									"this run's writes: %s; Caddy's log of it:\n%s",
									mode, k, at, writes[k-1].op, writes[k-1].key, name, err, writeList(got), strings.Join(e.logLinesWith(name), "\n"))
							}
						}
						e.stopCaddy()
						down.release()
						e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultServerError, 0)
					}

					fresh := newFaultPlan(0, failWrite)
					// Maintenance every 100ms: a job of the stopped Caddy (a
					// renewal that failed, SSLCI unreachable) may still hold its
					// name in certmagic's process-wide job queue when this one
					// starts (a killed process would not).
					e.newLog()
					e.startCaddy(e.faultConfig(t, dir, fresh, "renew_interval 100ms", names))
					for _, name := range names {
						if err := e.waitServed(dir, name, renewal, 30*time.Second); err != nil {
							unservable++
							t.Errorf("%v at write %d (in this run: %s; in the clean run: %s %s): %s not served: %v; Caddy's log of it:\n%s",
								mode, k, at, writes[k-1].op, writes[k-1].key, name, err, strings.Join(slices.DeleteFunc(e.logLinesWith(name), func(l string) bool {
									// maintenance's every 100ms
									return strings.Contains(l, "queuing for renewal") || strings.Contains(l, "in configured renewal window")
								}), "\n"))
						}
					}
					if renewal {
						// Renewed: nothing pending at SSLCI, no key kept.
						if n := len(e.sim.PendingOrders(e.sim.Token())); n != 0 {
							t.Errorf("%v at write %d: %d orders left pending", mode, k, n)
						}
						if kept := e.waitNoKeptKeys(dir); len(kept) != 0 {
							t.Errorf("%v at write %d (%s %s): keys left kept in storage: %v", mode, k, writes[k-1].op, writes[k-1].key, kept)
						}
					}
					e.stopCaddy()
					fresh.release()
				}
			}
			t.Logf("%s: %d writes; %d faults tried (%d failed writes, %d kills); names left unservable: %d; "+
				"names with a valid certificate not served with SSLCI unreachable: %d", phase, len(writes), tried, tried/2, tried/2, unservable, offline)
		})
	}
}

// faultConfig is the config of a Caddy serving names on the storage at dir
// through plan, with the global options extra.
func (e *testEnv) faultConfig(t *testing.T, dir string, plan *faultPlan, extra string, names []string) []byte {
	t.Helper()
	return e.withStorage(e.withLog(e.siteConfig(extra, strings.Join(names, ", "), "")), faultStorageConfig(t, dir, plan))
}

// faultRun starts Caddy on dir through plan and waits until every name is served.
func (e *testEnv) faultRun(t *testing.T, dir string, plan *faultPlan, names []string, renewed bool) {
	t.Helper()
	e.startCaddy(e.faultConfig(t, dir, plan, "", names))
	for _, name := range names {
		if err := e.waitServed(dir, name, renewed, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

// waitServed waits until Caddy serves name with a chain that verifies and
// the certificate and key stored in dir are a pair; renewed: a certificate
// with more than a month left.
func (e *testEnv) waitServed(dir, name string, renewed bool, limit time.Duration) error {
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var served *x509.Certificate
		if served, err = e.handshake(name); err != nil {
			continue
		}
		var certPEM []byte
		if certPEM, _, err = e.storedPair(dir, name); err != nil {
			continue
		}
		stored := leafOf(e.t, certPEM)
		switch {
		case renewed && time.Until(stored.NotAfter) < 30*24*time.Hour:
			err = fmt.Errorf("stored certificate expires %s: not renewed", stored.NotAfter)
		case renewed && time.Until(served.NotAfter) < 30*24*time.Hour:
			err = fmt.Errorf("served certificate expires %s: not renewed", served.NotAfter)
		default:
			return nil
		}
	}
	return err
}

// validCertificates are the names with an unexpired certificate stored
// in dir, whatever key is beside it.
func (e *testEnv) validCertificates(dir string, names []string) []string {
	var out []string
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, certmagic.StorageKeys.SiteCert(e.issuerKey(), name)))
		if err == nil && time.Now().Before(leafOf(e.t, data).NotAfter) {
			out = append(out, name)
		}
	}
	return out
}

// waitNoKeptKeys waits a moment for the kept keys in dir to go, and
// returns those left.
func (e *testEnv) waitNoKeptKeys(dir string) []string {
	prefix := path.Join("sslci", certmagic.StorageKeys.Safe(e.issuerKey()), "keys")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if kept := filesUnder(dir, prefix); len(kept) == 0 || time.Now().After(deadline) {
			return kept
		}
	}
}

// copyDir returns a new directory with the files of src.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "storage")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	return dst
}
