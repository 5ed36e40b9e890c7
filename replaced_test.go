package sslci_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// delete_replaced, with a real Caddy and the simulator: a real renewal
// (the simulator's clock was moved back for the first certificate, so it
// is near expiry when Caddy starts again). With the option the certificate
// the renewal replaced is deleted at SSLCI, logged with its crt_id, for
// exactly one more list and one delete; the renewed certificate is served
// and stays, and another client's certificate for the same name stays.
// Without it the replaced certificate stays, marked superseded.
func TestDeleteReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("delete_replaced=%v", on), func(t *testing.T) { testDeleteReplaced(t, on) })
	}
}

func testDeleteReplaced(t *testing.T, on bool) {
	e := newEnv(t, sslcitest.Options{VerificationWindow: 400 * 24 * time.Hour})
	name := "replaced.sslci.test"
	extra := ""
	if on {
		extra = "delete_replaced"
	}
	caddyfile := e.writeCaddyfile(extra, name)
	cfg := e.withLog(adapt(t, mustRead(t, caddyfile)))
	e.sim.Advance(-89 * 24 * time.Hour)
	e.startCaddy(cfg)
	first := e.waitForCertificate(name, nil, time.Minute)
	e.sim.Advance(time.Hour) // the other client's certificate expires an hour later
	e.foreignCertificate(name)
	ids := map[string]int64{}
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if c.EndTime.Unix() == first.NotAfter.Unix() {
			ids["first"] = c.ID
		} else {
			ids["foreign"] = c.ID
		}
	}
	e.stopCaddy()
	e.sim.Advance(89*24*time.Hour - time.Hour)
	e.sim.ResetRequests()
	e.startCaddy(cfg)
	renewed := e.waitForCertificate(name, first.SerialNumber.Bytes(), time.Minute)
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if c.EndTime.Unix() == renewed.NotAfter.Unix() {
			ids["renewed"] = c.ID
		}
	}
	if len(ids) != 3 {
		t.Fatalf("certificates %v, want the first, the other client's and the renewed", ids)
	}

	var left []int64
	if on {
		entry := e.waitForLogLine("deleted at SSLCI the certificate the renewal replaced", time.Minute)
		if entry["identifier"] != name || entry["crt_id"] != float64(ids["first"]) {
			t.Errorf("logged %v, want identifier %s and crt_id %d", entry, name, ids["first"])
		}
		e.wantCounts(map[sslcitest.Op]int{sslcitest.OpFinalize: 1, sslcitest.OpList: 1, sslcitest.OpDelete: 1})
		left = []int64{ids["renewed"], ids["foreign"]}
	} else {
		// Nothing signals a deletion that does not happen: give one the
		// time it would take (certmagic's lock is polled every second).
		time.Sleep(3 * time.Second)
		e.wantCounts(map[sslcitest.Op]int{sslcitest.OpFinalize: 1})
		left = []int64{ids["first"], ids["renewed"], ids["foreign"]}
		out, err := e.runSSLCI("list", "--config", caddyfile, "--json")
		var got listOutput
		if err != nil || json.Unmarshal([]byte(out), &got) != nil {
			t.Fatalf("list: %v\n%s", err, out)
		}
		marks := map[int64]string{}
		for _, c := range got.Accounts[0].Certificates {
			marks[c.ID] = c.Mark
		}
		if marks[ids["first"]] != "superseded" || marks[ids["renewed"]] != "served" || marks[ids["foreign"]] != "not_from_this_caddy" {
			t.Errorf("marks %v for %v", marks, ids)
		}
	}
	var got []int64
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		got = append(got, c.ID)
	}
	slices.Sort(got)
	slices.Sort(left)
	if !slices.Equal(got, left) {
		t.Errorf("certificates left at SSLCI %v, want %v (of %v)", got, left, ids)
	}
	if leaf, err := e.handshake(name); err != nil || leaf.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Errorf("Caddy no longer serves the renewed certificate: %v", err)
	}
}
