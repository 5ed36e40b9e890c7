package issuance

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// failingWrites is file storage whose writes of keys containing match fail.
type failingWrites struct {
	*certmagic.FileStorage
	match string
}

func (s failingWrites) Store(ctx context.Context, key string, value []byte) error {
	if s.match != "" && strings.Contains(key, s.match) {
		return errors.New("injected write error")
	}
	return s.FileStorage.Store(ctx, key, value)
}

// A failed Issue is counted once, by the step that failed: each step's
// failure in turn, a fresh name each (so that nothing is reused).
func TestIssueFailedSteps(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	l := e.iss.Ledger
	files := l.Storage().(*certmagic.FileStorage)
	const elsewhere = "http://127.0.0.1:1/api"
	for _, tc := range []struct {
		step  string
		name  string
		setUp func()
	}{
		{StepRequest, "request.test", func() { e.sim.InjectRedirect(sslcitest.OpRequest, 301, elsewhere, 1) }},
		{StepRequest, "*.wildcard.test", func() {}}, // refused before any request: a wildcard needs the DNS method
		{StepConfirm, "confirm.test", func() { e.sim.InjectRedirect(sslcitest.OpConfirm, 301, elsewhere, 1) }},
		{StepFinalize, "finalize.test", func() { e.sim.InjectRedirect(sslcitest.OpFinalize, 301, elsewhere, 1) }},
		{StepCheck, "check.test", func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1) }},
		{StepStore, "record.test", func() { l.SetStorage(failingWrites{files, "/ledger/certificates/"}) }},
	} {
		t.Run(tc.step+"/"+tc.name, func(t *testing.T) {
			if tc.name == "*.wildcard.test" {
				e.iss.Method = "http"
				defer func() { e.iss.Method = "dns" }()
			}
			tc.setUp()
			e.counted = map[string]int{}
			if _, err := e.issue(tc.name); err == nil {
				t.Fatal("Issue succeeded")
			}
			failed := map[string]int{}
			for what, n := range e.counted {
				if step, ok := strings.CutPrefix(what, "failed "); ok {
					failed[step] = n
				}
			}
			if want := map[string]int{tc.step: 1}; !maps.Equal(failed, want) {
				t.Errorf("failures counted %v, want %v", failed, want)
			}
		})
	}
	// Issues that succeed count no failure.
	l.SetStorage(files)
	e.counted = map[string]int{}
	if _, err := e.issue("fine.test"); err != nil {
		t.Fatal(err)
	}
	for what := range e.counted {
		if strings.HasPrefix(what, "failed ") {
			t.Errorf("a successful Issue counted %q", what)
		}
	}
}
