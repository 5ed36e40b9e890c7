package sslci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
)

// This file finds the issuers the `caddy sslci` commands work for: the
// sslci issuers of the tls app's automation policies in the user's config,
// loaded and adapted as `caddy storage` does it, and provisioned as Caddy
// would provision them (placeholders resolved, DNS provider loaded); or
// one issuer made from the flags.

// target is one provisioned sslci issuer and the storage its policy uses.
type target struct {
	iss      *Issuer
	policy   int      // its automation policy's index in the config; -1 from the flags
	subjects []string // that policy's subjects; none: every name
	storage  certmagic.Storage
	// storageID says which storage it is, to tell accounts apart.
	storageID string
	httpPort  int     // the port SSLCI's HTTP check arrives on
	ratio     float64 // its policy's renewal_window_ratio (0: certmagic's default)
}

// account says which SSLCI account, at which endpoint, with which storage:
// never the token.
func (t *target) account() string {
	return fmt.Sprintf("%s, account %s, storage %s", t.iss.Endpoint, t.iss.account, describeStorage(t.storage))
}

func describeStorage(s certmagic.Storage) string {
	if fs, ok := s.(*certmagic.FileStorage); ok {
		return "file_system " + fs.Path
	}
	if str, ok := s.(fmt.Stringer); ok {
		return str.String()
	}
	return fmt.Sprintf("%T", s)
}

// userConfig is the part of a Caddy JSON config the commands read.
type userConfig struct {
	StorageRaw json.RawMessage `json:"storage,omitempty"`
	Apps       struct {
		HTTP struct {
			HTTPPort int `json:"http_port,omitempty"`
		} `json:"http"`
		TLS struct {
			Resolvers  []string `json:"resolvers,omitempty"`
			Automation struct {
				Policies []*policyConfig `json:"policies,omitempty"`
			} `json:"automation"`
		} `json:"tls"`
	} `json:"apps"`
}

type policyConfig struct {
	Subjects           []string          `json:"subjects,omitempty"`
	RenewalWindowRatio float64           `json:"renewal_window_ratio,omitempty"`
	IssuersRaw         []json.RawMessage `json:"issuers,omitempty"`
	StorageRaw         json.RawMessage   `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
}

// commandEnv is what a command works with.
type commandEnv struct {
	targets  []*target
	policies [][]string // every automation policy's subjects, in order
}

// loadTargets reads the config (--config, --adapter, or the Caddyfile in the
// current directory) and provisions its sslci issuers; with --token, or
// with no sslci issuer in the config and $SSLCI_TOKEN set, it makes one
// from the flags. --endpoint keeps only the issuers with that endpoint;
// --storage-dir replaces the storage.
func loadTargets(fl caddycmd.Flags) (*commandEnv, error) {
	cfgJSON, _, _, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return nil, fmt.Errorf("sslci: loading the config: %w", err)
	}
	var cfg userConfig
	if len(cfgJSON) > 0 {
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			return nil, fmt.Errorf("sslci: reading the config: %w", err)
		}
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: cfg.StorageRaw})
	if err != nil {
		return nil, fmt.Errorf("sslci: setting up the config's storage: %w", err)
	}
	ctx = ctx.WithValue(tlsResolversKey{}, cfg.Apps.TLS.Resolvers) // tlsResolvers
	var storage certmagic.Storage = ctx.Storage()
	storageID := string(cfg.StorageRaw)
	if dir := fl.String("storage-dir"); dir != "" {
		storage, storageID = &certmagic.FileStorage{Path: dir}, "dir:"+dir
	}
	endpoint := fl.String("endpoint")
	env := &commandEnv{}
	newTarget := func(raw json.RawMessage, policy int) (*target, error) {
		mod, err := ctx.LoadModuleByID("tls.issuance.sslci", raw)
		if err != nil {
			return nil, err
		}
		t := &target{iss: mod.(*Issuer), policy: policy, storage: storage, storageID: storageID, httpPort: cfg.Apps.HTTP.HTTPPort}
		if t.iss.AlternateHTTPPort != 0 {
			t.httpPort = t.iss.AlternateHTTPPort
		}
		if t.httpPort == 0 {
			t.httpPort = certmagic.HTTPChallengePort
		}
		return t, nil
	}

	found := 0 // sslci issuers in the config, before --endpoint
	if token := fl.String("token"); token == "" {
		for i, p := range cfg.Apps.TLS.Automation.Policies {
			env.policies = append(env.policies, p.Subjects)
			for _, raw := range p.IssuersRaw {
				raw, ok := sslciIssuer(raw)
				if !ok {
					continue
				}
				t, err := newTarget(raw, i)
				if err != nil {
					return nil, fmt.Errorf("sslci: the issuer of automation policy %d (subjects %v): %w", i, p.Subjects, unprefixed(err))
				}
				found++
				if endpoint != "" && t.iss.Endpoint != endpoint {
					continue
				}
				t.subjects, t.ratio = p.Subjects, p.RenewalWindowRatio
				if len(p.StorageRaw) > 0 && fl.String("storage-dir") == "" {
					mod, err := ctx.LoadModule(p, "StorageRaw")
					if err != nil {
						return nil, fmt.Errorf("sslci: the storage of automation policy %d: %w", i, err)
					}
					if t.storage, err = mod.(caddy.StorageConverter).CertMagicStorage(); err != nil {
						return nil, fmt.Errorf("sslci: the storage of automation policy %d: %w", i, err)
					}
					t.storageID = string(p.StorageRaw)
				}
				t.iss.ledger.SetStorage(t.storage)
				env.targets = append(env.targets, t)
			}
		}
	}
	if len(env.targets) > 0 {
		return env, nil
	}
	if found > 0 {
		return nil, fmt.Errorf("sslci: none of the %d sslci issuers of the config has the endpoint %s", found, endpoint)
	}

	// From the flags. The token from the environment goes through its
	// placeholder, as in a config.
	token := fl.String("token")
	if token == "" {
		if os.Getenv("SSLCI_TOKEN") == "" {
			return nil, errors.New("sslci: no sslci issuer in the config" + describeSource(fl) +
				", and no token: give --config, or --token (or set SSLCI_TOKEN) and --endpoint")
		}
		token = "{env.SSLCI_TOKEN}"
	}
	raw, err := json.Marshal(map[string]string{"token": token, "endpoint": endpoint})
	if err != nil {
		return nil, err
	}
	t, err := newTarget(raw, -1)
	if err != nil {
		return nil, fmt.Errorf("sslci: the issuer from the flags: %w", unprefixed(err))
	}
	t.iss.ledger.SetStorage(t.storage)
	env.targets = []*target{t}
	env.policies = nil
	return env, nil
}

// sslciIssuer returns an issuer's JSON without its module name, if it is
// an sslci issuer.
func sslciIssuer(raw json.RawMessage) (json.RawMessage, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return nil, false
	}
	var name string
	if json.Unmarshal(fields["module"], &name) != nil || name != "sslci" {
		return nil, false
	}
	delete(fields, "module")
	out, err := json.Marshal(fields)
	return out, err == nil
}

func describeSource(fl caddycmd.Flags) string {
	if f := fl.String("config"); f != "" {
		return " " + f
	}
	return " (none given, and no Caddyfile in the current directory)"
}

// unprefixed drops the "sslci: " an issuer's error starts with, so that a
// command's error says it once. Caddy's loader wraps the issuer's error,
// so the prefix may be anywhere: only its first occurrence is removed.
func unprefixed(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "sslci: "); i >= 0 {
		return errors.New(msg[:i] + msg[i+len("sslci: "):])
	}
	return err
}

// accounts are the distinct accounts of the targets: a token used by two
// policies with the same storage is listed and pruned once.
func (e *commandEnv) accounts() []*target {
	var out []*target
	seen := map[string]bool{}
	for _, t := range e.targets {
		key := t.iss.IssuerKey() + "\x00" + t.iss.account + "\x00" + t.storageID
		if !seen[key] {
			seen[key] = true
			out = append(out, t)
		}
	}
	return out
}

// forName is the issuer Caddy would use for name (its errors do not name
// it: the check's report does): the first sslci issuer of
// the automation policy whose subjects match it, or else of the first
// policy without subjects, as Caddy's tls app chooses.
func (e *commandEnv) forName(name string) (*target, error) {
	if len(e.policies) == 0 {
		return e.targets[0], nil
	}
	policy := -1
	for i, subjects := range e.policies {
		if slices.ContainsFunc(subjects, func(s string) bool { return s == name || certmagic.MatchWildcard(name, s) }) {
			policy = i
			break
		}
	}
	if policy < 0 {
		policy = slices.IndexFunc(e.policies, func(s []string) bool { return len(s) == 0 })
	}
	if policy < 0 {
		return nil, errors.New("no automation policy of the config covers it (Caddy would use its default issuers)")
	}
	for _, t := range e.targets {
		if t.policy == policy {
			return t, nil
		}
	}
	return nil, fmt.Errorf("its automation policy (%d) has no sslci issuer", policy)
}
