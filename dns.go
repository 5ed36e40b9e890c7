package sslci

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/dnsverify"
)

// dnsSolver publishes SSLCI's TXT record with a DNS provider module and
// waits until DNS serves it.
type dnsSolver struct {
	dns    *dnsverify.Solver
	logger *zap.Logger
}

// loadDNSSolver loads the provider module of cfg (dns.providers.*) and sets
// up the solver as Caddy's ACME issuer does for its DNS challenge.
func loadDNSSolver(ctx caddy.Context, cfg *caddytls.DNSChallengeConfig, logger *zap.Logger) (*dnsSolver, error) {
	if cfg == nil || len(cfg.ProviderRaw) == 0 {
		return nil, errors.New("sslci: no DNS provider configured")
	}
	// LoadModule clears the raw JSON it loads; a copy keeps the issuer's
	// config as it was given.
	loaded := *cfg
	mod, err := ctx.LoadModule(&loaded, "ProviderRaw")
	if err != nil {
		return nil, fmt.Errorf("sslci: loading the DNS provider module: %w", err)
	}
	prov, ok := mod.(dnsverify.Provider)
	if !ok {
		return nil, fmt.Errorf("sslci: DNS provider module %T cannot append and delete records", mod)
	}
	override, err := caddy.NewReplacer().ReplaceOrErr(cfg.OverrideDomain, true, true)
	if err != nil {
		return nil, fmt.Errorf("sslci: expanding the DNS override domain %q: %w", cfg.OverrideDomain, err)
	}
	return &dnsSolver{
		dns: &dnsverify.Solver{
			Provider:           prov,
			TTL:                time.Duration(cfg.TTL),
			PropagationDelay:   time.Duration(cfg.PropagationDelay),
			PropagationTimeout: time.Duration(cfg.PropagationTimeout),
			Resolvers:          cfg.Resolvers,
			OverrideDomain:     override,
			Logger:             logger.Named("dns"),
		},
		logger: logger,
	}, nil
}

func (s *dnsSolver) present(ctx context.Context, v *api.Verification) (func(), error) {
	rec, err := s.dns.Present(ctx, v.RecordName, v.Content)
	if err != nil {
		return nil, err // it names the record; Issue names the identifier
	}
	return func() {
		if err := s.dns.CleanUp(ctx, rec); err != nil {
			s.logger.Error("deleting the verification TXT record", zap.String("name", rec.Name), zap.Error(err))
		}
	}, nil
}

// Interface guard
var _ solver = (*dnsSolver)(nil)
