package ledger

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// Record states.
const (
	StateSent     = "sent"     // request written, answer not (yet) known
	StatePending  = "pending"  // order: answered, not confirmed
	StateObtained = "obtained" // certificate: returned to certmagic (read from its metadata's Link; written so by earlier versions)
	StateStored   = "stored"   // certificate: seen in certmagic's storage
	StateRefused  = "refused"  // certificate: refused by the issuer's checks
)

// OrderRecord is one verification request. It exists while its order may
// be pending at SSLCI: "sent" until the answer arrives, then "pending" with
// the order id and the challenge (enough to resume it after a restart). It
// is deleted once the order is confirmed (the verification record takes
// over) or cancelled, or found gone from SSLCI's list.
type OrderRecord struct {
	Domain string    `json:"domain"`
	Method string    `json:"method"`
	SentAt time.Time `json:"sent_at"`
	// Floor is the highest order id this Caddy had seen when the request
	// was sent: the order it created, if any, has a higher id.
	Floor   int64      `json:"floor"`
	State   string     `json:"state"`
	OrderID int64      `json:"order_id,omitempty"`
	Chal    *Challenge `json:"challenge,omitempty"`

	Key string `json:"-"` // its storage key
}

// Challenge is what SSLCI asked to put in place, kept to resume an order.
type Challenge struct {
	Token      string `json:"token,omitempty"`
	Content    string `json:"content"`
	FilePath   string `json:"file_path,omitempty"`
	RecordName string `json:"record_name,omitempty"`
}

// Answered records SSLCI's answer to the request.
func (r *OrderRecord) Answered(v *api.Verification) {
	r.State, r.OrderID, r.Method = StatePending, v.OrderID, v.Method
	r.Chal = &Challenge{Token: v.Token, Content: v.Content, FilePath: v.FilePath, RecordName: v.RecordName}
}

// Verification is the recorded order, as SSLCI answered it.
func (r *OrderRecord) Verification() *api.Verification {
	v := &api.Verification{Domain: r.Domain, OrderID: r.OrderID, Method: r.Method}
	if c := r.Chal; c != nil {
		v.Token, v.Content, v.FilePath, v.RecordName = c.Token, c.Content, c.FilePath, c.RecordName
	}
	return v
}

// CertRecord is one finalize attempt: "sent", written before the finalize
// and not updated with its answer; "obtained" once returned to certmagic,
// which the ledger reads from the stored certificate's metadata (Link); "stored" once seen in certmagic's
// storage (kept as history: a stored certificate that a later one replaced
// is superseded); "refused" when the issuer's checks refused it (to be
// deleted at SSLCI). It is deleted once its certificate is deleted at
// SSLCI, or found gone, or expired.
type CertRecord struct {
	Names      []string  `json:"names"` // sorted
	SentAt     time.Time `json:"sent_at"`
	Floor      int64     `json:"floor"` // the highest crt_id seen when sent (0: none)
	State      string    `json:"state"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
	NotAfter   time.Time `json:"not_after,omitzero"` // the leaf's, when it parsed
	CertID     int64     `json:"crt_id,omitempty"`   // when learned from a list

	Key string `json:"-"`
}

// floorRecord holds the highest ids this Caddy has seen at the account.
type floorRecord struct {
	Order int64 `json:"order_floor"`
	Cert  int64 `json:"cert_floor"`
}

func uniqueName(t time.Time) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%d-%s.json", t.UnixNano(), hex.EncodeToString(b))
}

// NewOrderRecord is the record of a verification request for domain by
// method, about to be sent.
func (l *Ledger) NewOrderRecord(domain, method string) *OrderRecord {
	now := time.Now().UTC()
	return &OrderRecord{
		Domain: domain, Method: method, SentAt: now, Floor: l.floor().Order, State: StateSent,
		Key: path.Join(l.Keys.recordsDir(kindOrders, domain), uniqueName(now)),
	}
}

// NewCertRecord is the record of a finalize for names, about to be sent.
func (l *Ledger) NewCertRecord(names []string) *CertRecord {
	now := time.Now().UTC()
	sorted := slices.Sorted(slices.Values(names))
	return &CertRecord{
		Names: sorted, SentAt: now, Floor: l.floor().Cert, State: StateSent,
		Key: path.Join(l.Keys.recordsDir(kindCerts, sorted[0]), uniqueName(now)),
	}
}

// NormalNames is the one spelling of a set of names for comparing them:
// lowercased, without a final dot, sorted, each once.
func NormalNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = NormalName(n)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NormalName is one name as NormalNames spells it.
func NormalName(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func sameNames(listed, sorted []string) bool { return slices.Equal(NormalNames(listed), sorted) }
