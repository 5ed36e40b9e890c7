// Command caddy is Caddy's standard main with the sslci issuer plugged in:
// the same binary the README's xcaddy build produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/sslci/caddy-sslci"
)

func main() {
	caddycmd.Main()
}
