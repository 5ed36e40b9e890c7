package dnsverify

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/internal/testdns"
)

// setup starts a DNS server for zones and a Solver that writes to it and
// uses it as its resolver.
func setup(t *testing.T, zones ...string) (*testdns.Server, *Solver) {
	t.Helper()
	srv, err := testdns.Start(zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, &Solver{
		Provider:           &testdns.Provider{Server: srv.Addr()},
		Resolvers:          []string{srv.Addr()},
		PropagationTimeout: 5 * time.Second,
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPresentVisible(t *testing.T) {
	srv, s := setup(t, "visible.test")
	rec, err := s.Present(testContext(t), "_acme-challenge.visible.test", "value-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Zone != "visible.test." || rec.Name != "_acme-challenge.visible.test." || rec.Value != "value-1" {
		t.Errorf("record %+v", rec)
	}
	if got := srv.TXT(rec.Name); len(got) != 1 || got[0] != "value-1" {
		t.Errorf("stored %q", got)
	}
	if err := s.CleanUp(testContext(t), rec); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT(rec.Name); len(got) != 0 {
		t.Errorf("after CleanUp: %q", got)
	}
}

func TestPresentWaitsForPropagation(t *testing.T) {
	srv, s := setup(t, "delay.test")
	srv.SetDelay(1500 * time.Millisecond)
	s.PropagationTimeout = 10 * time.Second
	rec, err := s.Present(testContext(t), "_acme-challenge.delay.test", "value-2")
	if err != nil {
		t.Fatal(err)
	}
	// Two queries find the zone; then the record was checked more than once.
	if n := srv.Queries(); n < 4 {
		t.Errorf("%d queries: Present did not wait", n)
	}
	if got := srv.TXT(rec.Name); len(got) != 1 {
		t.Errorf("stored %q", got)
	}
}

func TestPresentNeverVisible(t *testing.T) {
	srv, s := setup(t, "hidden.test")
	srv.SetHidden(true)
	s.PropagationTimeout = 2 * time.Second
	_, err := s.Present(testContext(t), "_acme-challenge.hidden.test", "value-3")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"_acme-challenge.hidden.test.", "2s", srv.Addr(), "NXDOMAIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if got := srv.TXT("_acme-challenge.hidden.test"); len(got) != 0 {
		t.Errorf("left in the zone: %q", got)
	}
}

func TestPresentCancelled(t *testing.T) {
	for name, delay := range map[string]time.Duration{"while checking": 0, "during the propagation delay": 10 * time.Second} {
		t.Run(name, func(t *testing.T) {
			srv, s := setup(t, "cancel.test")
			srv.SetHidden(true)
			s.PropagationDelay = delay
			s.PropagationTimeout = 10 * time.Second
			ctx, cancel := context.WithCancel(testContext(t))
			time.AfterFunc(300*time.Millisecond, cancel)
			_, err := s.Present(ctx, "_acme-challenge.cancel.test", "value-4")
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			if got := srv.TXT("_acme-challenge.cancel.test"); len(got) != 0 {
				t.Errorf("left in the zone: %q", got)
			}
		})
	}
}

func TestPresentWithoutCheck(t *testing.T) {
	srv, s := setup(t, "nocheck.test")
	srv.SetHidden(true)
	s.PropagationTimeout = -1
	rec, err := s.Present(testContext(t), "_acme-challenge.nocheck.test", "value-5")
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT(rec.Name); len(got) != 1 {
		t.Errorf("stored %q", got)
	}
}

func TestOverrideDomain(t *testing.T) {
	srv, s := setup(t, "origin.test", "delegate.test")
	s.OverrideDomain = "_acme-challenge.delegate.test"
	rec, err := s.Present(testContext(t), "_acme-challenge.origin.test", "value-6")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Zone != "delegate.test." || rec.Name != "_acme-challenge.delegate.test." {
		t.Errorf("record %+v", rec)
	}
	if got := srv.TXT("_acme-challenge.delegate.test"); len(got) != 1 || got[0] != "value-6" {
		t.Errorf("at the override name: %q", got)
	}
	if got := srv.TXT("_acme-challenge.origin.test"); len(got) != 0 {
		t.Errorf("at the original name: %q", got)
	}
	if err := s.CleanUp(testContext(t), rec); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT("_acme-challenge.delegate.test"); len(got) != 0 {
		t.Errorf("after CleanUp: %q", got)
	}
}

func TestCleanUp(t *testing.T) {
	srv, s := setup(t, "cleanup.test")
	rec, err := s.Present(testContext(t), "_acme-challenge.cleanup.test", "value-7")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CleanUp(ctx, rec); err != nil {
		t.Fatalf("with a cancelled context: %v", err)
	}
	if got := srv.TXT(rec.Name); len(got) != 0 {
		t.Errorf("after CleanUp: %q", got)
	}

	// A record known only by zone, name and value (say, from storage).
	if err := srv.AppendTXT("_acme-challenge.cleanup.test", "value-8", time.Minute); err != nil {
		t.Fatal(err)
	}
	byHand := &Record{Zone: "cleanup.test.", Name: "_acme-challenge.cleanup.test.", Value: "value-8"}
	if err := s.CleanUp(ctx, byHand); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT(rec.Name); len(got) != 0 {
		t.Errorf("after CleanUp of the record by hand: %q", got)
	}
	if err := s.CleanUp(ctx, nil); err != nil {
		t.Errorf("CleanUp(nil): %v", err)
	}
}

// Without resolvers, the zone's nameservers are asked: the bootstrap server
// finds the zone and its NS (ns1.auth.test, 127.0.0.1) but never has the
// record; only the authoritative server, on nsPort, does.
func TestAuthoritativeNameservers(t *testing.T) {
	bootstrap, err := testdns.Start("auth.test")
	if err != nil {
		t.Fatal(err)
	}
	defer bootstrap.Close()
	auth, s := setup(t, "auth.test")
	_, port, _ := net.SplitHostPort(auth.Addr())
	s.Resolvers, s.bootstrap, s.nsPort = nil, []string{bootstrap.Addr()}, port

	rec, err := s.Present(testContext(t), "_acme-challenge.auth.test", "value-9")
	if err != nil {
		t.Fatal(err)
	}
	if len(bootstrap.TXT(rec.Name)) != 0 || len(auth.TXT(rec.Name)) != 1 {
		t.Error("the record is not where it should be")
	}

	auth.SetHidden(true)
	s.PropagationTimeout = time.Second
	_, err = s.Present(testContext(t), "_acme-challenge.auth.test", "value-10")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port) {
		t.Errorf("error %v, want one naming the nameserver 127.0.0.1:%s", err, port)
	}
}

// A record that does not fit a UDP answer, among others, with characters
// that DNS escapes, is still found: over TCP, split and unescaped.
func TestPresentLargeAnswer(t *testing.T) {
	srv, s := setup(t, "large.test")
	for _, c := range "abcdefghij" {
		if err := srv.AppendTXT("_acme-challenge.large.test", strings.Repeat(string(c), 200), 0); err != nil {
			t.Fatal(err)
		}
	}
	value := strings.Repeat(`x"y\z`, 60)
	if _, err := s.Present(testContext(t), "_acme-challenge.large.test", value); err != nil {
		t.Fatal(err)
	}
}

func TestPresentErrors(t *testing.T) {
	srv, s := setup(t, "errors.test")
	if _, err := s.Present(testContext(t), "_acme-challenge.elsewhere.invalid", "v"); err == nil || !strings.Contains(err.Error(), "zone") {
		t.Errorf("outside the zones: %v", err)
	}
	for _, name := range []string{"bad..name", ""} {
		if _, err := s.Present(testContext(t), name, "v"); err == nil {
			t.Errorf("name %q: no error", name)
		}
	}
	s.Provider = &testdns.Provider{Server: "127.0.0.1:1"} // no such server
	if _, err := s.Present(testContext(t), "_acme-challenge.errors.test", "v"); err == nil || !strings.Contains(err.Error(), "adding TXT record") {
		t.Errorf("provider failing: %v", err)
	}
	if got := srv.TXT("_acme-challenge.errors.test"); len(got) != 0 {
		t.Errorf("stored %q", got)
	}
	if _, err := (&Solver{}).Present(testContext(t), "_acme-challenge.errors.test", "v"); err == nil {
		t.Error("no provider: no error")
	}
}
