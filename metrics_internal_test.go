package sslci

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The expiry watch waits for certmagic's loads to be done, but not for
// ever: while the index keeps being updated (a burst of new names), it
// reads storage expiryMaxWait after the config load.
func TestExpiryWatchWaitIsBounded(t *testing.T) {
	oldQuiet, oldMax := expiryQuiet, expiryMaxWait
	expiryQuiet, expiryMaxWait = 100*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { expiryQuiet, expiryMaxWait = oldQuiet, oldMax })

	x := &expiry{certs: map[string]expiryEntry{}, groups: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var puts atomic.Int64
	go func() { // an update every 10 ms, for 20 s
		for i := 0; i < 2000 && ctx.Err() == nil; i++ {
			x.put(nil, "certificates/x/a.test/a.test.crt", nil, 0)
			puts.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	x.awaitQuiet(ctx)
	if n := puts.Load(); n >= 2000 {
		t.Fatalf("the watch waited until the updates stopped (%d of them)", n)
	}

	// Quiet: it returns once nothing came for expiryQuiet.
	cancel()
	x2 := &expiry{certs: map[string]expiryEntry{}, groups: map[string]bool{}}
	x2.awaitQuiet(context.Background())
}
