package sslcitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// authority is the simulator's CA: a root that exists only in this process
// and an intermediate that signs every leaf. Like a public CA, the response's
// "ca" carries the intermediate only; clients verify against the root.
type authority struct {
	root, inter       *x509.Certificate
	interKey          *ecdsa.PrivateKey
	rootPEM, interPEM []byte
}

// newAuthority makes a root (20 years) and an intermediate (10 years) valid
// from an hour before the earlier of the given times.
func newAuthority(times ...time.Time) (*authority, error) {
	from := times[0]
	for _, t := range times[1:] {
		if t.Before(from) {
			from = t
		}
	}
	from = from.Add(-time.Hour)
	suffix := make([]byte, 4)
	rand.Read(suffix) // tells the roots of different runs apart
	name := func(what string) pkix.Name {
		return pkix.Name{Organization: []string{"SSLCI Simulator"}, CommonName: "SSLCI Simulator " + what + " " + hex.EncodeToString(suffix)}
	}

	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		Subject:               name("Root CA"),
		NotBefore:             from,
		NotAfter:              from.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root, rootDER, err := sign(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}

	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	inter, interDER, err := sign(&x509.Certificate{
		Subject:               name("Intermediate CA"),
		NotBefore:             from,
		NotAfter:              from.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	return &authority{
		root:     root,
		inter:    inter,
		interKey: interKey,
		rootPEM:  certPEM(rootDER),
		interPEM: certPEM(interDER),
	}, nil
}

// issue signs a server certificate for pub: CN the first DNS name, SANs all
// of them (and ips), server authentication only.
func (a *authority) issue(pub crypto.PublicKey, names []string, ips []net.IP, notBefore, notAfter time.Time) (*x509.Certificate, []byte, error) {
	return sign(leafTemplate(pub, names, ips, notBefore, notAfter), a.inter, pub, a.interKey)
}

// selfSigned is a leaf for pub that names itself as its issuer, signed by
// key: pub's own private key when the simulator has it, else any key (the
// signature then verifies with nothing, which changes nothing for a client
// that must refuse the certificate anyway).
func selfSigned(key crypto.Signer, pub crypto.PublicKey, names []string, notBefore, notAfter time.Time) (*x509.Certificate, []byte, error) {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, nil, err
		}
	}
	tmpl := leafTemplate(pub, names, nil, notBefore, notAfter)
	return sign(tmpl, tmpl, pub, key)
}

func leafTemplate(pub crypto.PublicKey, names []string, ips []net.IP, notBefore, notAfter time.Time) *x509.Certificate {
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment // RSA key exchange in TLS 1.2
	}
	tmpl := &x509.Certificate{
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              names,
		IPAddresses:           ips,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	return tmpl
}

// servingCert is the TLS certificate of the API itself (wall-clock validity,
// since TLS clients check against the wall clock).
func (a *authority) servingCert(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	names := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	now := time.Now()
	leaf, der, err := a.issue(key.Public(), names, ips, now.Add(-time.Hour), now.AddDate(1, 0, 0))
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, a.inter.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// sign fills in a random 128-bit serial and signs tmpl.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) (*x509.Certificate, []byte, error) {
	one := big.NewInt(1)
	limit := new(big.Int).Sub(new(big.Int).Lsh(one, 128), one)
	serial, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, one) // 1 .. 2^128-1: never zero
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, der, err
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
