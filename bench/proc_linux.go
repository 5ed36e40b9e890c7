package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the child if the benchmark dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
