// Package sslcitest is an in-process SSLCI server for tests, benchmarks and
// local use, in the spirit of net/http/httptest and Pebble.
//
// It implements the documented SSLCI REST API (one path, /api, dispatched by
// HTTP method) on a real listener: accounts identified by tokens, HTTP-01 and
// DNS TXT verifications that are really checked, SAN certificates issued by
// an intermediate CA under a root that exists only in this process, and
// fault injection (errors, garbage, dropped connections, rate limits,
// redirects, bad certificates, answers lost after the request was
// processed) to exercise a client's error handling.
//
// Where the published documentation is silent, the assumption made is
// written next to the code that makes it.
//
//	srv, err := sslcitest.NewServer(sslcitest.Options{})
//	if err != nil { ... }
//	defer srv.Close()
//	// point the client at srv.URL() with srv.Token(); trust srv.RootPool().
package sslcitest
