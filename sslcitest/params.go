package sslcitest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// params is a request's JSON body, kept raw so that a wrong type can be
// answered with a message naming the parameter.
type params map[string]json.RawMessage

// raw returns the parameter, treating JSON null as absent.
func (p params) raw(name string) (json.RawMessage, bool) {
	v, ok := p[name]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return nil, false
	}
	return v, true
}

// str returns a string parameter; ok is false when it is absent.
func (p params) str(name string) (v string, ok bool, err error) {
	raw, ok := p.raw(name)
	if !ok {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", true, badRequest("invalid parameter %s: must be a string", name)
	}
	return v, true, nil
}

// requiredStr returns a string parameter that must be present and not empty.
func (p params) requiredStr(name string) (string, error) {
	v, ok, err := p.str(name)
	switch {
	case err != nil:
		return "", err
	case !ok || strings.TrimSpace(v) == "":
		return "", badRequest("missing parameter %s", name)
	}
	return v, nil
}

// integer returns an integer parameter. The documentation types ids as int;
// a numeric string is accepted as well, as PHP services commonly do.
func (p params) integer(name string) (v int64, ok bool, err error) {
	raw, ok := p.raw(name)
	if !ok {
		return 0, false, nil
	}
	if json.Unmarshal(raw, &v) == nil {
		return v, true, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return v, true, nil
		}
	}
	return 0, true, badRequest("invalid parameter %s: must be an integer", name)
}

// domain returns the one domain of a verification request or confirmation,
// normalized. A list in any form is refused: the documentation accepts
// exactly one domain per verification.
func (p params) domain() (string, error) {
	if _, many := p.raw("domains"); many {
		return "", badRequest("invalid parameter domains: a verification takes exactly one domain, in domain (domains is for action=finalize)")
	}
	raw, ok := p.raw("domain")
	if !ok {
		return "", badRequest("missing parameter domain")
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil {
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			return "", badRequest("invalid parameter domain: exactly one domain is accepted, not an array")
		}
		return "", badRequest("invalid parameter domain: must be a string")
	}
	d, err := normalizeDomain(name)
	if err != nil {
		return "", badRequest("invalid parameter domain: %q %v", name, err)
	}
	return d, nil
}

// loggedDomains are the domains the request names, as sent, for the log.
func (p params) loggedDomains() []string {
	if d, ok, _ := p.str("domain"); ok {
		return []string{d}
	}
	var list []string
	if raw, ok := p.raw("domains"); ok && json.Unmarshal(raw, &list) == nil {
		return list
	}
	return nil
}
