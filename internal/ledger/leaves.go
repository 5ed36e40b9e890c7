package ledger

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// This file reads the certificates certmagic stores for this issuer: what
// reconciliation must never delete at SSLCI. Reading one that fails for
// another reason than "not exist" is an error, never "not stored": a
// certificate that cannot be read for a moment is still served by Caddy.

// Leaf is a certificate certmagic stores for this issuer.
type Leaf struct {
	Key       string   // its storage key
	Names     []string // NormalNames of its DNS names
	NotBefore time.Time
	NotAfter  time.Time
	// Damaged: the file does not parse (Names and times are unknown).
	// Caddy cannot serve it, but which certificate it was is unknown too:
	// the ownership rule leaves SSLCI's certificates of its folder alone.
	Damaged bool
}

// ParseCertificates parses the PEM CERTIFICATE blocks of data, in order,
// skipping other blocks; data with no PEM block at all is an error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 && len(bytes.TrimSpace(data)) > 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// ParseLeaf is the first certificate of a PEM chain, read as certmagic
// reads a stored one (tls.X509KeyPair parses the first CERTIFICATE block
// and only carries the others): a chain whose later certificates do not
// parse is still what Caddy serves, so it is still stored. (Parsing the
// whole chain here took such a certificate for one not stored, which the
// sweep could delete at SSLCI.)
func ParseLeaf(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// readStored reads the certificate stored at key: nil if there is none; a
// Damaged leaf, not "none", if it does not parse (which certificate it
// holds is unknown); an error if storage cannot say.
func readStored(ctx context.Context, storage certmagic.Storage, key string) (*Leaf, error) {
	data, err := storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the stored certificate %s: %w", key, err)
	}
	leaf, err := ParseLeaf(data)
	if err != nil {
		return &Leaf{Key: key, Damaged: true}, nil
	}
	l := NewLeaf(key, leaf)
	return &l, nil
}

// errDamaged is what to do about a stored certificate that does not
// parse, for the log and `caddy sslci status` alike.
var errDamaged = errors.New("no Caddy can serve it: remove its folder and restart Caddy, which then obtains a new one")

// warnDamaged logs a stored certificate that does not parse.
func (l *Ledger) warnDamaged(leaf *Leaf) {
	if leaf != nil && leaf.Damaged {
		l.Logger.Warn("a stored certificate does not parse: "+errDamaged.Error()+"; SSLCI's certificates for its names are left alone until then",
			zap.String("key", leaf.Key))
	}
}

// NewLeaf is the Leaf of cert, stored at key.
func NewLeaf(key string, cert *x509.Certificate) Leaf {
	return Leaf{Key: key, Names: NormalNames(cert.DNSNames), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
}

// leavesFor reads the leaves certmagic stores for each set of names.
func (l *Ledger) leavesFor(ctx context.Context, sets [][]string) ([]Leaf, error) {
	var out []Leaf
	for _, names := range sets {
		leaf, err := readStored(ctx, l.Storage(), l.Keys.SiteCert(NamesKey(names)))
		if err != nil {
			return nil, err
		}
		l.warnDamaged(leaf)
		if leaf != nil {
			out = append(out, *leaf)
		}
	}
	return out, nil
}

// StoredLeaves reads every certificate certmagic stores for this issuer
// (certificates/<issuer key>/<names key>/<names key>.crt), but for those
// whose key skip (if not nil) says the caller knows already; a file that
// does not parse is a Damaged leaf.
func (l *Ledger) StoredLeaves(ctx context.Context, skip func(key string) bool) ([]Leaf, error) {
	storage := l.Storage()
	keys, err := l.storedCertKeys(ctx)
	if err != nil {
		return nil, err
	}
	var leaves []Leaf
	for _, key := range keys {
		if skip != nil && skip(key) {
			continue
		}
		leaf, err := readStored(ctx, storage, key)
		if err != nil {
			return nil, err
		}
		l.warnDamaged(leaf)
		if leaf != nil {
			leaves = append(leaves, *leaf)
		}
	}
	return leaves, nil
}

// storedCertKeys lists the keys of the certificates certmagic stores for
// this issuer, each in its names key's folder.
func (l *Ledger) storedCertKeys(ctx context.Context) ([]string, error) {
	keys, err := listTree(ctx, l.Storage(), l.Keys.CertsDir())
	if err != nil {
		return nil, fmt.Errorf("listing the stored certificates: %w", err)
	}
	return slices.DeleteFunc(keys, func(key string) bool { return !strings.HasSuffix(key, ".crt") }), nil
}

func storedAs(leaves []Leaf, names []string, notAfter int64) *Leaf {
	i := slices.IndexFunc(leaves, func(s Leaf) bool { return !s.Damaged && slices.Equal(s.Names, names) && s.NotAfter.Unix() == notAfter })
	if i < 0 {
		return nil
	}
	return &leaves[i]
}
