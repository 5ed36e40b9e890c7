package sslci_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// A real caddy process (built from ./cmd/caddy) starting with 20 sites is
// killed with SIGKILL at random moments, restarted on the same storage,
// again and again; a last one runs until every site has its certificate
// and the ledger's sweep has run. Then SSLCI must hold no pending order
// and exactly the certificates stored. Slow (it builds Caddy, and waits
// for stale locks and the sweep): run with SSLCI_KILLTEST=<kills>.
func TestKillDuringStart(t *testing.T) {
	k := newKillRun(t)
	killed := k.killLoop(k.hasCert, nil)
	k.finish(killed, k.hasCert, nil)
}

// As TestKillDuringStart, during the renewal of 20 certificates with a day
// left: after each kill, every name must have in storage a certificate
// with its key, or a kept key matching it (which the repair puts back);
// then a Caddy with SSLCI unreachable serves every name, and a last one
// with SSLCI back renews every name, leaving no order pending, exactly
// the stored certificates at SSLCI and no kept key.
func TestKillDuringRenewal(t *testing.T) {
	k := newKillRun(t)
	e := k.e

	// Certificates SSLCI made 89 days ago: a day left of 90, so Caddy
	// renews them when it starts.
	e.sim.Advance(-89 * 24 * time.Hour)
	cmd := k.start()
	k.waitAll(k.hasCert, 5*time.Minute)
	for n := -1; n != e.sim.CountRequests(sslcitest.OpAny); time.Sleep(2 * time.Second) {
		n = e.sim.CountRequests(sslcitest.OpAny)
	}
	k.stop(cmd)
	e.sim.Advance(89 * 24 * time.Hour)
	// The renewals replace these: superseded, they stay at SSLCI (without
	// delete_replaced, only prune deletes them).
	var first []int64
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		first = append(first, c.ID)
	}
	t.Logf("first issuance: %d stored, %d certificates at SSLCI, %d orders pending",
		k.count(k.hasCert), len(e.sim.Certificates(e.sim.Token())), len(e.sim.PendingOrders(e.sim.Token())))

	var offPerKill []int
	killed := k.killLoop(k.renewed, func() string {
		var off []string
		for _, name := range k.names {
			if why := k.offHTTPS(name); why != "" {
				off = append(off, name)
				t.Errorf("after kill %d, %s would be off HTTPS (%s); storage:\n%s", len(offPerKill)+1, name, why, k.describe(name))
			}
		}
		offPerKill = append(offPerKill, len(off))
		return fmt.Sprintf("%d names off HTTPS %v", len(off), off)
	})
	t.Logf("renewal: %d kills; names off HTTPS after each kill: %v (goal 0)", killed, offPerKill)

	// SSLCI unreachable: every name is served with a valid certificate,
	// the previous one if its renewal was cut.
	e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultServerError, 1<<30)
	cmd = k.start()
	served := 0
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range k.names {
		var err error
		for {
			if _, err = e.handshake(name); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("SSLCI unreachable: %s not served with a valid certificate: %v; storage:\n%s", name, err, k.describe(name))
			continue
		}
		served++
	}
	k.stop(cmd)
	e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultServerError, 0)
	t.Logf("SSLCI unreachable: %d of %d names served with a valid certificate", served, len(k.names))

	k.finish(killed, k.renewed, first)
	if kept := e.waitNoKeptKeys(e.storageDir); len(kept) != 0 {
		t.Errorf("keys left kept in storage: %v", kept)
	}
}

// killRun is a caddy binary and the Caddyfile of 20 sites on one
// environment, for the kill tests.
type killRun struct {
	t         *testing.T
	e         *testEnv
	kills     int // SSLCI_KILLTEST
	bin       string
	caddyfile string
	logs      *os.File
	names     []string
	rng       *rand.Rand
	fs        *certmagic.FileStorage
}

// newKillRun skips t unless SSLCI_KILLTEST is set, builds Caddy and writes
// its Caddyfile.
func newKillRun(t *testing.T) *killRun {
	t.Helper()
	kills, _ := strconv.Atoi(os.Getenv("SSLCI_KILLTEST"))
	if kills <= 0 {
		t.Skip("set SSLCI_KILLTEST=<number of kills> to run")
	}
	k := &killRun{t: t, kills: kills, bin: filepath.Join(t.TempDir(), "caddy"), rng: rand.New(rand.NewPCG(1, 2))}
	build := exec.Command("go", "build", "-o", k.bin, "./cmd/caddy")
	build.Env = userEnv // the go command needs the user's caches, not TestMain's HOME
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	k.e = newEnv(t, sslcitest.Options{Faults: sslcitest.FaultRates{Latency: 300 * time.Millisecond}})
	k.fs = &certmagic.FileStorage{Path: k.e.storageDir}
	for i := range 20 {
		k.names = append(k.names, fmt.Sprintf("k%02d.kill.test", i))
	}
	k.caddyfile = filepath.Join(t.TempDir(), "Caddyfile")
	cfg := strings.Replace(k.e.globalOptions(""), fmt.Sprintf("admin 127.0.0.1:%d", k.e.adminPort), "admin off", 1) +
		fmt.Sprintf("\n%s {\n\ttls {\n\t\t%s\n\t}\n\trespond \"hi\"\n}\n", strings.Join(k.names, ", "), k.e.issuerBlock(""))
	if err := os.WriteFile(k.caddyfile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(t.TempDir(), "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	k.logs = logs
	return k
}

// start starts a caddy process, killed at the end of the test if still running.
func (k *killRun) start() *exec.Cmd {
	cmd := exec.Command(k.bin, "run", "--config", k.caddyfile, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "SSLCI_TEST_TOKEN="+k.e.sim.Token())
	cmd.Stdout, cmd.Stderr = k.logs, k.logs
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// stop stops cmd with SIGTERM (SIGKILL if it has not exited within 30s).
func (k *killRun) stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		k.t.Logf("caddy did not exit within 30s of SIGTERM: killed")
		cmd.Process.Kill()
		<-exited
	}
}

// storedLeaf is the leaf of the certificate stored for name, or nil.
func (k *killRun) storedLeaf(name string) *x509.Certificate {
	data, err := k.fs.Load(context.Background(), certmagic.StorageKeys.SiteCert(k.e.issuerKey(), name))
	if err != nil {
		return nil
	}
	return parseLeaf(data)
}

func parseLeaf(chainPEM []byte) *x509.Certificate {
	block, _ := pem.Decode(chainPEM)
	if block == nil {
		return nil
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return leaf
}

// hasCert: a certificate is stored for name.
func (k *killRun) hasCert(name string) bool { return k.storedLeaf(name) != nil }

// renewed: the certificate stored for name has more than a month left.
func (k *killRun) renewed(name string) bool {
	leaf := k.storedLeaf(name)
	return leaf != nil && time.Until(leaf.NotAfter) > 30*24*time.Hour
}

// count is the number of names for which done holds.
func (k *killRun) count(done func(string) bool) (n int) {
	for _, name := range k.names {
		if done(name) {
			n++
		}
	}
	return n
}

// killLoop starts caddy and kills it with SIGKILL at a random moment after
// its first API request, again and again, SSLCI_KILLTEST times or until
// done holds for every name, and returns the number of kills. After each,
// afterKill (if not nil) checks storage and says what it found, for the log.
func (k *killRun) killLoop(done func(string) bool, afterKill func() string) int {
	// Each kill comes at a random moment after the start's first API
	// request (a killed Caddy's locks go stale within 10s, then the next
	// one issues); the simulator's latency stretches the issuance.
	e := k.e
	killed := 0
	for ; killed < k.kills && k.count(done) < len(k.names); killed++ {
		before := e.sim.CountRequests(sslcitest.OpAny)
		cmd := k.start()
		for deadline := time.Now().Add(30 * time.Second); e.sim.CountRequests(sslcitest.OpAny) == before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Duration(k.rng.IntN(1000)) * time.Millisecond
		time.Sleep(d)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		found := ""
		if afterKill != nil {
			found = ", " + afterKill()
		}
		k.t.Logf("kill %d, %s after the first request: %d done, %d certificates at SSLCI, %d orders pending%s",
			killed+1, d, k.count(done), len(e.sim.Certificates(e.sim.Token())), len(e.sim.PendingOrders(e.sim.Token())), found)
	}
	return killed
}

// waitAll waits until done holds for every name.
func (k *killRun) waitAll(done func(string) bool, limit time.Duration) {
	began := time.Now()
	for _, name := range k.names {
		for !done(name) {
			if time.Since(began) > limit {
				k.t.Fatalf("%s not done within %s; storage:\n%s", name, limit, k.describe(name))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// finish starts a last caddy, waits until done holds for every name and
// the ledger's sweep has run, and checks the end state at SSLCI, where the
// certificates otherCerts may also be.
func (k *killRun) finish(killed int, done func(string) bool, otherCerts []int64) {
	t, e := k.t, k.e
	k.start()
	began := time.Now()
	k.waitAll(done, 5*time.Minute)
	t.Logf("every name done %s after the last start", time.Since(began).Round(time.Second))
	time.Sleep(time.Until(began.Add(75 * time.Second))) // the sweep, a minute after start
	for _, name := range k.names {
		if _, _, err := e.storedPair(e.storageDir, name); err != nil {
			t.Errorf("%s: stored certificate and key are not a pair: %v", name, err)
		}
	}
	certs, pending := e.sim.Certificates(e.sim.Token()), e.sim.PendingOrders(e.sim.Token())
	superseded := 0
	for _, c := range certs {
		if slices.Contains(otherCerts, c.ID) {
			superseded++
		}
	}
	t.Logf("after %d kills: %d certificates at SSLCI for %d names (%d of them superseded, left for prune), %d orders pending",
		killed, len(certs), len(k.names), superseded, len(pending))
	e.checkEndState(t, k.names, nil, otherCerts)
}

// offHTTPS says why a Caddy started on the storage now could not serve
// name, "" if it could: the certificate stored for name is valid and
// either the key beside it or a kept key matches it.
func (k *killRun) offHTTPS(name string) string {
	e := k.e
	if _, _, err := e.storedPair(e.storageDir, name); err == nil {
		return ""
	}
	certPEM, err := k.fs.Load(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name))
	if err != nil {
		return "no certificate stored"
	}
	leaf := parseLeaf(certPEM)
	switch {
	case leaf == nil:
		return "stored certificate unreadable"
	case time.Now().After(leaf.NotAfter):
		return "stored certificate expired"
	}
	keyPEM, err := k.fs.Load(context.Background(), e.keptKeyPath(leaf))
	if err != nil {
		return "stored key does not match the certificate, and no kept key for it"
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return "neither the stored key nor the kept key match the certificate"
	}
	return ""
}

// describe lists what storage holds for name: the files of its site and
// its kept keys, each key saying whether it matches the stored certificate.
func (k *killRun) describe(name string) string {
	e := k.e
	certPEM, _ := k.fs.Load(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name))
	var b strings.Builder
	if leaf := parseLeaf(certPEM); leaf != nil {
		fmt.Fprintf(&b, "\tstored leaf: serial %x, not after %s, kept key path %s\n", leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339), e.keptKeyPath(leaf))
	}
	files := filesUnder(e.storageDir, certmagic.StorageKeys.CertsSitePrefix(e.issuerKey(), name))
	files = append(files, filesUnder(e.storageDir, path.Join("sslci", certmagic.StorageKeys.Safe(e.issuerKey()), "keys", certmagic.StorageKeys.Safe(name)))...)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(e.storageDir, filepath.FromSlash(f)))
		fi, _ := os.Stat(filepath.Join(e.storageDir, filepath.FromSlash(f)))
		note := ""
		switch {
		case err != nil:
			note = err.Error()
		case strings.HasSuffix(f, ".key") || strings.Contains(f, "/keys/"):
			if _, err := tls.X509KeyPair(certPEM, data); err == nil {
				note = "matches the stored certificate"
			} else {
				note = "does not match the stored certificate"
			}
		case strings.HasSuffix(f, ".crt"):
			if leaf := parseLeaf(data); leaf != nil {
				note = fmt.Sprintf("leaf serial %x", leaf.SerialNumber)
			}
		}
		size := int64(-1)
		if fi != nil {
			size = fi.Size()
		}
		fmt.Fprintf(&b, "\t%s (%d bytes): %s\n", f, size, note)
	}
	return b.String()
}
