package testport

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

func TestPortsAreDistinctBindableAndBelowEphemeral(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := Get(t)
		if p < low || p > high {
			t.Fatalf("port %d outside %d-%d", p, low, high)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	for p := range seen {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d handed out but not bindable: %v", p, err)
		}
		ln.Close()
	}
}

// A port something listens on, and a port already handed out, are passed
// over for the next one proposed.
func TestBusyAndHeldPortsAreSkipped(t *testing.T) {
	held := Get(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // busy, whatever its range
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port

	proposed := 0
	got, err := get(func() int {
		proposed++
		switch proposed {
		case 1:
			return held
		case 2:
			return busy
		}
		return low + rand.IntN(high-low+1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got == held || got == busy || proposed < 3 {
		t.Fatalf("got port %d after %d proposals; held %d and busy %d must be skipped", got, proposed, held, busy)
	}
}
