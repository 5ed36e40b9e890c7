package sslci

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// statFails is file storage whose Stat fails, and whose Exists says no,
// as a network storage's may while its backend is unreachable.
type statFails struct{ *certmagic.FileStorage }

func (statFails) Stat(context.Context, string) (certmagic.KeyInfo, error) {
	return certmagic.KeyInfo{}, errors.New("backend unreachable")
}
func (statFails) Exists(context.Context, string) bool { return false }

func probeTarget(storage certmagic.Storage) *target {
	l := &ledger.Ledger{Keys: ledger.Keys{IssuerKey: "sslci-test", Account: "acct"}, Logger: zap.NewNop()}
	l.SetStorage(storage)
	return &target{iss: &Issuer{ledger: l, logger: zap.NewNop()}, storage: storage, httpPort: 1}
}

// The HTTP check never takes a challenge it cannot read for an absent one:
// when storage cannot say whether an issuance's challenge is there, the
// probe is not stored (it would replace that challenge, and its cleanup
// delete it, with the answer of the issuance's order).
func TestCheckLeavesAChallengeItCannotRead(t *testing.T) {
	ctx := context.Background()
	files := &certmagic.FileStorage{Path: t.TempDir()}
	tg := probeTarget(statFails{files})
	key := tg.iss.ledger.Keys.Challenge("x.test")
	inFlight := []byte(`{"type":"http-01","token":"real","keyAuthorization":"real.thumb","sslci_record_key":"k","sslci_order":{"order_id":42}}`)
	if err := files.Store(ctx, key, inFlight); err != nil {
		t.Fatal(err)
	}
	r := &checkResult{Name: "x.test", Method: "http"}
	tg.checkHTTP(ctx, r, "127.0.0.1:1", time.Second)
	if r.OK || r.Result != "not checked" || !strings.Contains(r.Error, "backend unreachable") {
		t.Errorf("check with storage unreadable: %+v; want not checked, with the storage's error", r)
	}
	if data, err := files.Load(ctx, key); err != nil || !bytes.Equal(data, inFlight) {
		t.Errorf("the issuance's challenge was changed: %q, %v", data, err)
	}
}

// While the probe is in storage the check holds the name's issue lock if
// it was free, so that no issuance stores its challenge over the probe or
// under it; it releases it after.
func TestCheckHoldsAFreeLock(t *testing.T) {
	ctx := context.Background()
	files := &certmagic.FileStorage{Path: t.TempDir()}
	tg := probeTarget(files)
	lock := ledger.IssueLock("x.test")
	var heldDuringFetch atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := files.TryLock(ctx, lock)
		if err == nil && got {
			files.Unlock(ctx, lock)
		}
		heldDuringFetch.Store(err == nil && !got)
		http.NotFound(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	r := &checkResult{Name: "x.test", Method: "http"}
	tg.checkHTTP(ctx, r, ln.Addr().String(), 5*time.Second)
	if r.URL == "" {
		t.Fatalf("the probe was not fetched: %+v", r)
	}
	if !heldDuringFetch.Load() {
		t.Error("the name's issue lock was free while the probe was in storage")
	}
	if got, err := files.TryLock(ctx, lock); err != nil || !got {
		t.Errorf("the lock is not released after the check: %v, %v", got, err)
	} else {
		files.Unlock(ctx, lock)
	}
	if files.Exists(ctx, tg.iss.ledger.Keys.Challenge("x.test")) {
		t.Error("the probe is left in storage")
	}
}
