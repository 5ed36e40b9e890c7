package sslci_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
	kills, _ := strconv.Atoi(os.Getenv("SSLCI_KILLTEST"))
	if kills <= 0 {
		t.Skip("set SSLCI_KILLTEST=<number of kills> to run")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, sslcitest.Options{Faults: sslcitest.FaultRates{Latency: 300 * time.Millisecond}})
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("k%02d.kill.test", i))
	}
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	cfg := strings.Replace(e.globalOptions(""), fmt.Sprintf("admin 127.0.0.1:%d", e.adminPort), "admin off", 1) +
		fmt.Sprintf("\n%s {\n\ttls {\n\t\t%s\n\t}\n\trespond \"hi\"\n}\n", strings.Join(names, ", "), e.issuerBlock(""))
	if err := os.WriteFile(caddyfile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(t.TempDir(), "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "SSLCI_TEST_TOKEN="+e.sim.Token())
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// Each kill comes at a random moment after the start's first API
	// request (a killed Caddy's locks go stale within 10s, then the next
	// one issues); the simulator's latency stretches the issuance.
	rng := rand.New(rand.NewPCG(1, 2))
	fs := &certmagic.FileStorage{Path: e.storageDir}
	stored := func() (n int) {
		for _, name := range names {
			if fs.Exists(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name)) {
				n++
			}
		}
		return n
	}
	killed := 0
	for ; killed < kills && stored() < len(names); killed++ {
		before := e.sim.CountRequests(sslcitest.OpAny)
		cmd := start()
		for deadline := time.Now().Add(30 * time.Second); e.sim.CountRequests(sslcitest.OpAny) == before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Duration(rng.IntN(1000)) * time.Millisecond
		time.Sleep(d)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d, %s after the first request: %d stored, %d certificates at SSLCI, %d orders pending",
			killed+1, d, stored(), len(e.sim.Certificates(e.sim.Token())), len(e.sim.PendingOrders(e.sim.Token())))
	}
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	began := time.Now()
	for _, name := range names {
		for !fs.Exists(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name)) {
			if time.Since(began) > 5*time.Minute {
				t.Fatalf("no certificate stored for %s", name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("every name stored %s after the last start", time.Since(began).Round(time.Second))
	time.Sleep(time.Until(began.Add(75 * time.Second))) // the sweep, a minute after start
	certs, pending := e.sim.Certificates(e.sim.Token()), e.sim.PendingOrders(e.sim.Token())
	t.Logf("after %d kills: %d certificates at SSLCI for %d names, %d orders pending", killed, len(certs), len(names), len(pending))
	e.checkEndState(t, names, nil, nil)
}
