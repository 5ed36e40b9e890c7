package issuance

import (
	"testing"
	"time"
)

// The confirm polling starts at 100ms, grows by half, stops growing at 3s,
// and SSLCI's Retry-After replaces it whenever given.
func TestConfirmWait(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{1, 0, 100 * ms},
		{2, 0, 150 * ms},
		{3, 0, 225 * ms},
		{4, 0, 337500 * time.Microsecond},
		{10, 0, 3 * time.Second},
		{100, 0, 3 * time.Second},
		{1, 7 * time.Second, 7 * time.Second},
		{100, time.Second, time.Second},
	} {
		if got := confirmWait(tc.attempt, tc.retryAfter); got != tc.want {
			t.Errorf("confirmWait(%d, %s) = %s, want %s", tc.attempt, tc.retryAfter, got, tc.want)
		}
	}
}
