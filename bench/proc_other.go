//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

// dieWithParent does nothing here: the benchmark stops Caddy itself.
func dieWithParent(*exec.Cmd) {}

// selfCPU is not measured here.
func selfCPU() float64 { return 0 }

// raiseFileLimit leaves the limit as it is.
func raiseFileLimit(uint64) {}

// pinProcess is Linux-only.
func pinProcess([]int) error { return errors.New("-pin works on Linux only") }

// startOn starts cmd; CPUs are not chosen here.
func startOn(cmd *exec.Cmd, _, _ []int) error { return cmd.Start() }

// flushDisk does nothing here.
func flushDisk() {}
