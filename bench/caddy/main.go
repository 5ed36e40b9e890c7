// Command caddy is the Caddy the benchmark runs: Caddy's standard main with
// the sslci issuer plugged in, as `xcaddy build --with
// github.com/sslci/caddy-sslci` builds it. Both issuers run in this binary.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/sslci/caddy-sslci"
)

func main() {
	caddycmd.Main()
}
