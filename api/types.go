package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Verification methods.
const (
	MethodHTTP = "http"
	MethodDNS  = "dns"
)

// Record types for Delete.
const (
	RecordCertificate = "ssl"   // a certificate, by crt_id
	RecordOrder       = "order" // a pending order, by order_id
)

// CertificateInfo is one certificate in the account, as listed.
type CertificateInfo struct {
	ID      int64
	Domains []string
	Added   time.Time
	Expires time.Time
}

// OrderInfo is one pending order in the account, as listed.
type OrderInfo struct {
	ID      int64
	Domains []string
	Status  string
}

// List is the account's certificates and pending orders.
type List struct {
	Certificates  []CertificateInfo
	PendingOrders []OrderInfo
}

// Verification is what the API asks to be put in place for one domain.
type Verification struct {
	Domain  string
	OrderID int64
	Method  string // MethodHTTP or MethodDNS
	Token   string // the challenge token
	// Content is what must be served: for HTTP the body of the file at
	// FilePath (an ACME key authorization), for DNS the TXT record's value.
	Content string
	// FilePath and URL are set for HTTP, e.g. "/.well-known/acme-challenge/<token>".
	FilePath string
	URL      string
	// RecordName is set for DNS: the TXT record's fully qualified name.
	RecordName string
}

// ConfirmRequest names the verification to confirm.
type ConfirmRequest struct {
	Domain  string
	OrderID int64  // optional: the API finds the order when zero
	Method  string // optional: MethodHTTP when empty
}

// Confirmation is the API's answer to a successful confirmation.
type Confirmation struct {
	Domain  string
	OrderID int64
	Message string
}

// Certificate is a finalized certificate.
type Certificate struct {
	// CertificatePEM is the leaf ("crt"), CAPEM the issuing chain ("ca").
	CertificatePEM []byte
	CAPEM          []byte
	// PrivateKeyPEM and CSRPEM are the key and CSR the service generated
	// itself ("key", "csr"); PrivateKeyPEM is empty when the service did not
	// return one. Which key the certificate is for must be checked by the
	// caller, never assumed.
	PrivateKeyPEM []byte
	CSRPEM        []byte
	// ID is the certificate id, when the service returns one (the documented
	// finalize response has none).
	ID      int64
	Details Details
}

// Details is the "details" block of a finalize response, kept as sent.
type Details struct {
	Subject   map[string]string `json:"subject,omitempty"`
	ValidFrom string            `json:"valid_from,omitempty"`
	ValidTo   string            `json:"valid_to,omitempty"`
	SAN       string            `json:"san,omitempty"`
}

// The wire format. Decoding is deliberately lenient where the documentation
// is silent: unknown fields are ignored (a provider adding a field must never
// break issuance), ids may arrive as numbers or strings, "status" as a bool,
// a number or a word, and "domains" as one name, a comma-separated list or an
// array. Required fields are checked after decoding, by name.

// envelope holds the fields every response may carry.
type envelope struct {
	Status  flexStatus `json:"status"`
	Message string     `json:"message"`
	Error   flexText   `json:"error"`
}

// enveloped is a wire type that embeds the envelope, decoded with it.
type enveloped interface{ env() *envelope }

func (e *envelope) env() *envelope { return e }

// serverMessage returns what the server said, from "message" or "error".
func (e envelope) serverMessage() string {
	if e.Message != "" {
		return e.Message
	}
	return string(e.Error)
}

type listWire struct {
	envelope
	Certificates []struct {
		ID      flexInt     `json:"crt_id"`
		Domains flexDomains `json:"domains"`
		AddTime flexInt     `json:"add_time"`
		EndTime flexInt     `json:"end_time"`
	} `json:"certificates"`
	PendingOrders []struct {
		ID      flexInt     `json:"order_id"`
		Domains flexDomains `json:"domains"`
		Status  string      `json:"status"`
	} `json:"pending_orders"`
}

type verificationWire struct {
	envelope
	Domain       string  `json:"domain"`
	OrderID      flexInt `json:"order_id"`
	Verification *struct {
		Method   string `json:"method"`
		Token    string `json:"token"`
		Content  string `json:"content"`
		Value    string `json:"value"` // assumed alternative to content for DNS
		FilePath string `json:"file_path"`
		URL      string `json:"url"`
		// The DNS record name is undocumented; accept the likely spellings.
		Record string `json:"record"`
		Name   string `json:"name"`
		Host   string `json:"host"`
	} `json:"verification"`
}

type confirmWire struct {
	envelope
	Domain  string  `json:"domain"`
	OrderID flexInt `json:"order_id"`
}

type finalizeWire struct {
	envelope
	Key     string   `json:"key"`
	CSR     string   `json:"csr"`
	Crt     string   `json:"crt"`
	CA      string   `json:"ca"`
	ID      flexInt  `json:"crt_id"`
	Details *Details `json:"details"`
}

// flexStatus decodes "status": true/false, 1/0, or a word. Words other than
// the clear successes and failures (e.g. "pending") are kept in Word.
type flexStatus struct {
	Set  bool
	OK   bool
	Word string
}

func (s *flexStatus) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	s.Set = true
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		s.OK = v
	case float64:
		s.OK = v != 0
	case string:
		s.Word = strings.ToLower(strings.TrimSpace(v))
		switch s.Word {
		case "true", "ok", "success", "succeeded", "1", "verified", "valid":
			s.OK = true
		}
	default:
		return typeError(b, "a boolean, number or string")
	}
	return nil
}

// typeError is a json.UnmarshalTypeError, so that the decoder adds the
// field's name to it.
func typeError(b []byte, want string) error {
	value := string(b)
	if len(value) > 40 {
		value = value[:40] + "…"
	}
	return &json.UnmarshalTypeError{Value: value + " (want " + want + ")", Type: reflect.TypeFor[string]()}
}

// flexInt decodes a JSON number or a string holding one.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	s := strings.Trim(string(b), `"`)
	if s == "" {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != float64(int64(f)) {
			return typeError(b, "an integer")
		}
		v = int64(f)
	}
	*n = flexInt(v)
	return nil
}

// flexText decodes a string, or keeps the raw JSON of anything else (an
// "error" object, say) so a message is never lost.
type flexText string

func (t *flexText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = flexText(s)
		return nil
	}
	if string(bytes.TrimSpace(b)) != "null" {
		*t = flexText(b)
	}
	return nil
}

// flexDomains decodes "a.com", "a.com, b.com" or ["a.com", "b.com"].
type flexDomains []string

func (d *flexDomains) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return typeError(b, "a string or a list of strings")
		}
		list = strings.Split(s, ",")
	}
	out := (*d)[:0]
	for _, name := range list {
		if name = strings.TrimSpace(name); name != "" {
			out = append(out, name)
		}
	}
	*d = out
	return nil
}
