//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing here: the benchmark stops Caddy itself.
func dieWithParent(*exec.Cmd) {}

// selfCPU is not measured here.
func selfCPU() float64 { return 0 }

// raiseFileLimit leaves the limit as it is.
func raiseFileLimit(uint64) {}
