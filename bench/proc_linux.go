package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// dieWithParent makes the kernel kill the child if the benchmark dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// selfCPU is the user and system CPU time this process used so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// raiseFileLimit raises this process's limit of open files, which Caddy
// inherits, to at least want if it may (as root), else to its hard limit,
// and warns if that is below want.
func raiseFileLimit(want uint64) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= want {
		return
	}
	raised := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
		return
	}
	lim.Cur = lim.Max
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Fprintf(os.Stderr, "warning: open files limited to %d (ulimit -Hn), below the %d this run may need (%v)\n", lim.Max, want, err)
}

// setAffinity runs the thread tid on cpus only.
func setAffinity(tid int, cpus []int) error {
	var mask [16]uint64 // 1024 CPUs
	for _, c := range cpus {
		mask[c/64] |= 1 << (c % 64)
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
	if errno != 0 {
		return fmt.Errorf("sched_setaffinity: %w", errno)
	}
	return nil
}

// pinProcess runs every thread of this process on cpus; the threads it
// starts later inherit it.
func pinProcess(cpus []int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := setAffinity(tid, cpus); err != nil {
			return err
		}
	}
	return nil
}

// startOn starts cmd on cpus (nil: wherever this process runs). The child
// inherits the CPUs of the thread that forks it: that thread is moved to
// cpus for the fork, and every thread back to this process's own after it.
func startOn(cmd *exec.Cmd, cpus, own []int) error {
	if cpus == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setAffinity(syscall.Gettid(), cpus); err != nil {
		return err
	}
	err := cmd.Start()
	if perr := pinProcess(own); err == nil {
		err = perr
	}
	return err
}

// flushDisk writes out what the file systems hold dirty (the Caddy binary
// just built, the storage of the run before) before a timed run: on ext4
// a small file's fsync can wait on it, so without it a run pays for the
// one before.
func flushDisk() { syscall.Sync() }
