package sslci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

type listOutput struct {
	Accounts []struct {
		Endpoint     string `json:"endpoint"`
		Account      string `json:"account"`
		Certificates []struct {
			ID      int64    `json:"crt_id"`
			Domains []string `json:"domains"`
			EndTime int64    `json:"end_time"`
			Mark    string   `json:"mark"`
			Note    string   `json:"note"`
		} `json:"certificates"`
		PendingOrders []struct {
			ID      int64    `json:"order_id"`
			Domains []string `json:"domains"`
			Mark    string   `json:"mark"`
		} `json:"pending_orders"`
	} `json:"accounts"`
}

// `caddy sslci list` with the Caddyfile a real Caddy runs: the certificate
// Caddy serves is marked served (matched by names and expiry to the leaf
// in its storage); a certificate and an order another client of the
// account made are "not from this Caddy". As a table and as JSON.
func TestCommandList(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	caddyfile := e.writeCaddyfile("", "list.sslci.test")
	e.startCaddy(adapt(t, mustRead(t, caddyfile)))
	served := e.waitForCertificate("list.sslci.test", nil, time.Minute)
	e.foreignCertificate("other.sslci.test")
	client, _ := api.New(e.sim.URL(), e.sim.Token())
	order, err := client.RequestVerification(context.Background(), "pending.sslci.test", api.MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}

	out, err := e.runSSLCI("list", "--config", caddyfile, "--json")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	var got listOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("list --json is not JSON: %v\n%s", err, out)
	}
	if len(got.Accounts) != 1 || got.Accounts[0].Endpoint != e.sim.URL() {
		t.Fatalf("accounts = %+v, want the simulator's one", got.Accounts)
	}
	marks := map[string]string{}
	for _, c := range got.Accounts[0].Certificates {
		marks[strings.Join(c.Domains, ",")] = c.Mark
		if c.Mark == "served" && (c.EndTime != served.NotAfter.Unix() || !strings.Contains(c.Note, "list.sslci.test.crt")) {
			t.Errorf("served certificate %+v: want end_time %d and the storage key", c, served.NotAfter.Unix())
		}
	}
	if want := map[string]string{"list.sslci.test": "served", "other.sslci.test": "not_from_this_caddy"}; !equalMaps(marks, want) {
		t.Errorf("certificate marks = %v, want %v", marks, want)
	}
	orders := got.Accounts[0].PendingOrders
	if len(orders) != 1 || orders[0].ID != order.OrderID || orders[0].Mark != "not_from_this_caddy" {
		t.Errorf("pending orders = %+v, want order %d not from this Caddy", orders, order.OrderID)
	}

	// The Caddyfile in the current directory, as `caddy run` finds it.
	t.Chdir(filepath.Dir(caddyfile))
	out, err = e.runSSLCI("list")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	t.Logf("caddy sslci list:\n%s", out)
	for _, want := range []string{"KIND", "list.sslci.test", "served by this Caddy", "other.sslci.test", "not from this Caddy", "pending.sslci.test", e.sim.URL()} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
}

// --endpoint picks among the config's issuers; none with it is an error.
func TestCommandEndpointFilter(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	caddyfile := e.writeCaddyfile("", "a.sslci.test")
	if _, err := e.runSSLCI("list", "--config", caddyfile, "--endpoint", e.sim.URL()); err != nil {
		t.Errorf("list --endpoint %s: %v", e.sim.URL(), err)
	}
	_, err := e.runSSLCI("list", "--config", caddyfile, "--endpoint", "http://127.0.0.1:1/api")
	if err == nil || !strings.Contains(err.Error(), "none of the 1 sslci issuers of the config has the endpoint http://127.0.0.1:1/api") {
		t.Errorf("list --endpoint of no issuer: %v", err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// cancel and delete, with the token from $SSLCI_TOKEN and the endpoint
// from the flag: they do what they say, print it, and fail clearly (and
// with a non-zero status) on an unknown id or a wrong argument.
func TestCommandCancelDelete(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	t.Setenv("SSLCI_TOKEN", e.sim.Token())
	t.Chdir(t.TempDir()) // no Caddyfile here
	e.foreignCertificate("delete.sslci.test")
	client, _ := api.New(e.sim.URL(), e.sim.Token())
	order, err := client.RequestVerification(context.Background(), "cancel.sslci.test", api.MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}
	flags := []string{"--endpoint", e.sim.URL(), "--storage-dir", e.storageDir}

	out, err := e.runSSLCI(append([]string{"cancel", fmt.Sprint(order.OrderID)}, flags...)...)
	if err != nil || !strings.Contains(out, fmt.Sprintf("cancelled order %d", order.OrderID)) {
		t.Errorf("cancel: %v, output %q", err, out)
	}
	if left := e.sim.PendingOrders(e.sim.Token()); len(left) != 0 {
		t.Errorf("orders still pending: %+v", left)
	}
	_, err = e.runSSLCI(append([]string{"cancel", fmt.Sprint(order.OrderID)}, flags...)...)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("cancelling order %d", order.OrderID)) || !strings.Contains(err.Error(), "no such order") {
		t.Errorf("cancelling it again: error %v, want one naming the order and SSLCI's message", err)
	}

	crt := e.sim.Certificates(e.sim.Token())[0].ID
	out, err = e.runSSLCI(append([]string{"delete", fmt.Sprint(crt), "--json"}, flags...)...)
	var done struct {
		Type string `json:"type"`
		ID   int64  `json:"id"`
		Done bool   `json:"done"`
	}
	if err != nil || json.Unmarshal([]byte(out), &done) != nil || done.ID != crt || done.Type != "ssl" || !done.Done {
		t.Errorf("delete --json: %v, output %q", err, out)
	}
	if left := e.sim.Certificates(e.sim.Token()); len(left) != 0 {
		t.Errorf("certificates left: %+v", left)
	}
	if _, err := e.runSSLCI(append([]string{"delete", "abc"}, flags...)...); err == nil || !strings.Contains(err.Error(), `"abc" is not an id`) {
		t.Errorf("delete abc: %v", err)
	}
	if _, err := e.runSSLCI("delete"); err == nil {
		t.Error("delete without an id succeeded")
	}
	t.Setenv("SSLCI_TOKEN", "")
	if _, err := e.runSSLCI("list"); err == nil || !strings.Contains(err.Error(), "no sslci issuer in the config") {
		t.Errorf("list with no config and no token: %v", err)
	}
}

// A real Caddy renews a certificate (the first one made 89 days ago by
// SSLCI's clock, so a day is left); list marks the replaced certificate
// superseded by the one served; prune --dry-run removes nothing; prune
// deletes exactly the superseded one, leaving the served certificate and
// another client's certificate and order, with one list under the locks.
func TestCommandPrune(t *testing.T) {
	e := newEnv(t, sslcitest.Options{VerificationWindow: 400 * 24 * time.Hour})
	name := "prune.sslci.test"
	caddyfile := e.writeCaddyfile("", name)
	e.sim.Advance(-89 * 24 * time.Hour)
	e.startCaddy(adapt(t, mustRead(t, caddyfile)))
	first := e.waitForCertificate(name, nil, time.Minute)
	e.stopCaddy()
	e.sim.Advance(89 * 24 * time.Hour)
	e.startCaddy(adapt(t, mustRead(t, caddyfile)))
	renewed := e.waitForCertificate(name, first.SerialNumber.Bytes(), time.Minute)
	e.foreignCertificate("other.sslci.test")
	client, _ := api.New(e.sim.URL(), e.sim.Token())
	if _, err := client.RequestVerification(context.Background(), "pending.sslci.test", api.MethodHTTP); err != nil {
		t.Fatal(err)
	}
	var firstID, renewedID int64
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if c.Domains[0] != name {
			continue
		}
		switch c.EndTime.Unix() {
		case first.NotAfter.Unix():
			firstID = c.ID
		case renewed.NotAfter.Unix():
			renewedID = c.ID
		}
	}

	out, err := e.runSSLCI("list", "--config", caddyfile, "--json")
	var got listOutput
	if err != nil || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	marks := map[int64]string{}
	for _, c := range got.Accounts[0].Certificates {
		marks[c.ID] = c.Mark + " " + c.Note
	}
	if marks[firstID] != fmt.Sprintf("superseded by %d", renewedID) || !strings.HasPrefix(marks[renewedID], "served ") || len(marks) != 3 {
		t.Errorf("marks = %v, want %d superseded by %d, served", marks, firstID, renewedID)
	}
	out, _ = e.runSSLCI("list", "--config", caddyfile)
	t.Logf("caddy sslci list:\n%s", out)

	e.sim.ResetRequests()
	out, err = e.runSSLCI("prune", "--config", caddyfile, "--dry-run")
	if err != nil || !strings.Contains(out, fmt.Sprintf("would remove certificate %d (%s): superseded", firstID, name)) {
		t.Errorf("prune --dry-run: %v\n%s", err, out)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1}) // as the README says: one GET
	if n := len(e.sim.Certificates(e.sim.Token())); n != 3 {
		t.Errorf("--dry-run left %d certificates, want 3", n)
	}

	// An issuance of the name holds its lock (certmagic holds it through
	// its retries): prune waits a while, then leaves the name alone.
	fs := &certmagic.FileStorage{Path: e.storageDir}
	if err := fs.Lock(context.Background(), "issue_cert_"+name); err != nil {
		t.Fatal(err)
	}
	restore := sslci.SetLockWait(500 * time.Millisecond)
	out, err = e.runSSLCI("prune", "--config", caddyfile)
	restore()
	fs.Unlock(context.Background(), "issue_cert_"+name)
	if err != nil || !strings.Contains(out, fmt.Sprintf("left alone certificate %d (%s): superseded: an issuance of %s holds its lock", firstID, name, name)) {
		t.Errorf("prune with the name locked: %v\n%s", err, out)
	}
	if n := len(e.sim.Certificates(e.sim.Token())); n != 3 {
		t.Errorf("prune with the name locked left %d certificates, want 3", n)
	}

	e.sim.ResetRequests()
	out, err = e.runSSLCI("prune", "--config", caddyfile, "--json")
	var pruned struct {
		Removed []removalOutput `json:"removed"`
	}
	if err != nil || json.Unmarshal([]byte(out), &pruned) != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if len(pruned.Removed) != 1 || pruned.Removed[0].ID != firstID || pruned.Removed[0].Type != "ssl" || !pruned.Removed[0].Done {
		t.Errorf("prune removed %+v, want certificate %d", pruned.Removed, firstID)
	}
	var left []int64
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		left = append(left, c.ID)
	}
	if len(left) != 2 || slices.Contains(left, firstID) || !slices.Contains(left, renewedID) {
		t.Errorf("certificates left %v, want all but %d", left, firstID)
	}
	if n := len(e.sim.PendingOrders(e.sim.Token())); n != 1 {
		t.Errorf("%d orders left, want another client's one", n)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 2, sslcitest.OpDelete: 1})
	if _, err := e.handshake(name); err != nil {
		t.Errorf("Caddy no longer serves %s: %v", name, err)
	}
}

type removalOutput struct {
	Type string `json:"type"`
	ID   int64  `json:"id"`
	Done bool   `json:"done"`
}

type checkOutput struct {
	Checks []struct {
		Name    string `json:"name"`
		Method  string `json:"method"`
		OK      bool   `json:"ok"`
		Result  string `json:"result"`
		Address string `json:"address"`
		Status  int    `json:"status"`
		Excerpt string `json:"excerpt"`
		Record  string `json:"record"`
	} `json:"checks"`
}

func parseChecks(t *testing.T, out string) checkOutput {
	t.Helper()
	var got checkOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Checks) != 1 {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	return got
}

// check over HTTP, with the config of a real Caddy: while it runs, the
// probe reaches it; once it is stopped and another server answers 404 on
// its HTTP port, the check says so and fails; with nothing there, it says
// nothing answered. No probe is left in storage, no order is spent.
func TestCommandCheckHTTP(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	name := "check.sslci.test"
	caddyfile := e.writeCaddyfile("", name)
	e.startCaddy(adapt(t, mustRead(t, caddyfile)))
	e.waitForCertificate(name, nil, time.Minute)
	e.sim.ResetRequests()
	addr := fmt.Sprintf("127.0.0.1:%d", e.httpPort)
	args := []string{"check", name, "--config", caddyfile, "--via", "127.0.0.1"}

	out, err := e.runSSLCI(append(args, "--json")...)
	got := parseChecks(t, out)
	if c := got.Checks[0]; err != nil || !c.OK || c.Result != "reached this Caddy" || c.Address != addr || c.Method != "http" {
		t.Errorf("check with Caddy running: %v, %+v", err, c)
	}
	out, err = e.runSSLCI(args...)
	t.Logf("caddy sslci check (Caddy running):\n%s", out)
	if err != nil || !strings.Contains(out, "reached this Caddy") {
		t.Errorf("check: %v\n%s", err, out)
	}
	e.checkNothingLeft(t)

	// certmagic holds a name's lock through all its retries: the check
	// does not wait for it, and works while it is held.
	fs := &certmagic.FileStorage{Path: e.storageDir}
	ctx := context.Background()
	if err := fs.Lock(ctx, "issue_cert_"+name); err != nil {
		t.Fatal(err)
	}
	out, err = e.runSSLCI(append(args, "--json")...)
	if c := parseChecks(t, out).Checks[0]; err != nil || !c.OK {
		t.Errorf("check while certmagic holds the lock: %v, %+v", err, c)
	}
	fs.Unlock(ctx, "issue_cert_"+name)

	// A challenge in storage is a verification in progress: the check
	// leaves it as it is.
	chalKey := "acme/" + certmagic.StorageKeys.Safe(e.issuerKey()) + "/challenge_tokens/" + name + ".json"
	inFlight := []byte(`{"type":"http-01","token":"real","keyAuthorization":"real.thumbprint"}`)
	if err := fs.Store(ctx, chalKey, inFlight); err != nil {
		t.Fatal(err)
	}
	out, err = e.runSSLCI(append(args, "--json")...)
	if c := parseChecks(t, out).Checks[0]; err == nil || c.OK || !strings.Contains(out, "a verification of this name is in progress") {
		t.Errorf("check during a verification: %v\n%s", err, out)
	}
	if data, err := fs.Load(ctx, chalKey); err != nil || !bytes.Equal(data, inFlight) {
		t.Errorf("the challenge in storage was changed: %q, %v", data, err)
	}
	fs.Delete(ctx, chalKey)

	e.stopCaddy()
	serveHTTP(t, addr, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	out, err = e.runSSLCI(append(args, "--json")...)
	got = parseChecks(t, out)
	if c := got.Checks[0]; err == nil || c.OK || !strings.HasPrefix(c.Result, "something else answered: 404 Not Found") || c.Status != 404 || !strings.Contains(c.Excerpt, "404 page not found") {
		t.Errorf("check with another server: %v, %+v", err, c)
	}
	out, _ = e.runSSLCI(args...)
	t.Logf("caddy sslci check (another server):\n%s", out)
	e.checkNothingLeft(t)
	e.wantCounts(map[sslcitest.Op]int{})
}

// With nothing on the port, the check says nothing answered, and why.
func TestCommandCheckNothingListens(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	caddyfile := e.writeCaddyfile("", "none.sslci.test")
	out, err := e.runSSLCI("check", "none.sslci.test", "--config", caddyfile, "--via", "127.0.0.1", "--json")
	c := parseChecks(t, out).Checks[0]
	if err == nil || c.OK || c.Result != "nothing answered" || !strings.Contains(out, "connection refused") {
		t.Errorf("check with nothing listening: %v\n%s", err, out)
	}
	e.checkNothingLeft(t)
}

// check over DNS, with a JSON config whose issuer has the test DNS
// provider: the probe TXT record is published, seen by the resolver, and
// removed; no order is spent. A wildcard name is checked at its apex's
// record. A name whose zone the server does not serve fails.
func TestCommandCheckDNS(t *testing.T) {
	e, dnsSrv := newDNSEnv(t, "dnscheck.test")
	issuer := map[string]any{"module": "sslci", "token": "{env.SSLCI_TEST_TOKEN}", "endpoint": e.sim.URL()}
	for k, v := range dnsFields(dnsSrv, "5s") {
		issuer[k] = v
	}
	cfg, _ := json.Marshal(map[string]any{
		"storage": map[string]any{"module": "file_system", "root": e.storageDir},
		"apps": map[string]any{"tls": map[string]any{"automation": map[string]any{
			"policies": []any{map[string]any{"issuers": []any{issuer}}},
		}}},
	})
	path := filepath.Join(t.TempDir(), "caddy.json")
	os.WriteFile(path, cfg, 0o600)

	for _, name := range []string{"www.dnscheck.test", "*.dnscheck.test"} {
		out, err := e.runSSLCI("check", name, "--config", path, "--json")
		c := parseChecks(t, out).Checks[0]
		want := "_acme-challenge." + strings.TrimPrefix(name, "*.") + "."
		if err != nil || !c.OK || c.Method != "dns" || c.Record != want || !strings.Contains(c.Result, "serve the probe TXT record") {
			t.Errorf("check %s: %v\n%s", name, err, out)
		}
		if left := dnsSrv.TXT(want); len(left) != 0 {
			t.Errorf("probe records left at %s: %v", want, left)
		}
	}
	out, err := e.runSSLCI("check", "www.elsewhere.test", "--config", path)
	t.Logf("caddy sslci check (a zone the server lacks):\n%s", out)
	if err == nil || !strings.Contains(out, "FAIL") {
		t.Errorf("check of a name in no zone: %v\n%s", err, out)
	}
	if n := len(e.sim.Requests()); n != 0 {
		t.Errorf("the check sent %d requests to SSLCI", n)
	}
}
