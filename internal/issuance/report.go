package issuance

import (
	"context"
	"log/slog"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// What each step of an issuance reports: one log line in Caddy's field
// names (identifier, order_id, key_source) and its metric. The flow in
// issuer.go calls these in one line each.

// verificationRequested: SSLCI created order v.OrderID for name.
func (r *run) verificationRequested(name string, v *api.Verification) {
	r.iss.Metrics.Verification(r.iss.Method, VerificationRequested)
	r.logger.Info("verification requested", zap.String("identifier", name),
		zap.Int64("order_id", v.OrderID), zap.String("method", r.iss.Method))
}

// verificationDone ends a requested verification: confirmed when err is
// nil, else failed, and the error keeps the name and method for its hint.
func (r *run) verificationDone(name string, v *api.Verification, err error) error {
	if err != nil {
		r.iss.Metrics.Verification(r.iss.Method, VerificationFailed)
		return &verifyError{name: name, method: r.iss.Method, err: err}
	}
	r.iss.Metrics.Verification(r.iss.Method, VerificationConfirmed)
	r.logger.Info("verification confirmed", zap.String("identifier", name), zap.Int64("order_id", v.OrderID))
	return nil
}

// verificationReused: name was verified recently (rec), so it is not
// verified again; its order is kept for the certificate's metadata.
func (r *run) verificationReused(rec ledger.Verification) {
	r.iss.Metrics.Verification(r.iss.Method, VerificationReused)
	r.mu.Lock()
	r.reused[rec.Domain] = rec.OrderID
	r.mu.Unlock()
	r.logger.Info("reusing a recent verification", zap.String("identifier", rec.Domain),
		zap.Int64("order_id", rec.OrderID), zap.Time("verified_at", rec.VerifiedAt),
		zap.Duration("age", time.Since(rec.VerifiedAt).Round(time.Second)))
}

// refused counts a certificate Issue refuses and marks err for its hint.
// keySource is "unknown" when the check failed before the key was known.
func (r *run) refused(keySource string, err error) error {
	r.iss.Metrics.Refused(keySource)
	return &refusedError{requireCSRKey: keySource == "sslci" && r.iss.RequireCSRKey, err: err}
}

// The api client's log lines (a retry, a slow-down) name the identifier
// of the request: WithLogNames puts it in the request's context, and
// NamesHandler, the client's slog handler, adds it to each line.
type logNamesKey struct{}

func WithLogNames(ctx context.Context, names ...string) context.Context {
	return context.WithValue(ctx, logNamesKey{}, names)
}

type NamesHandler struct{ slog.Handler }

func (h NamesHandler) Handle(ctx context.Context, rec slog.Record) error {
	switch names, _ := ctx.Value(logNamesKey{}).([]string); len(names) {
	case 0:
	case 1:
		rec = rec.Clone()
		rec.AddAttrs(slog.String("identifier", names[0]))
	default:
		rec = rec.Clone()
		rec.AddAttrs(slog.Any("identifiers", names))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h NamesHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return NamesHandler{h.Handler.WithAttrs(attrs)}
}

func (h NamesHandler) WithGroup(name string) slog.Handler {
	return NamesHandler{h.Handler.WithGroup(name)}
}
