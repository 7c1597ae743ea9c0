package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinSelf splits the CPUs this process may run on: it keeps the lower half for itself,
// the load generator (every thread, with GOMAXPROCS set to their count), and returns
// the upper half for the servers. The servers and the generator then no longer take
// each other's CPU, and the Go schedulers on each side are sized to what they have.
func pinSelf() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("-pin: %w", err)
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return nil, fmt.Errorf("-pin needs at least 2 CPUs, this process may use %d", len(cpus))
	}
	gen, srv := cpus[:len(cpus)/2], cpus[len(cpus)/2:]
	var mine unix.CPUSet
	for _, c := range gen {
		mine.Set(c)
	}
	// sched_setaffinity applies to one thread: set it on every thread of the process.
	// A thread the runtime starts later inherits the mask of the thread starting it.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("-pin: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &mine); err != nil {
			return nil, fmt.Errorf("-pin: thread %d: %w", tid, err)
		}
	}
	runtime.GOMAXPROCS(len(gen))
	fmt.Printf("pinned: load generator on CPUs %v (GOMAXPROCS %d), servers on CPUs %v (GOMAXPROCS %d)\n",
		gen, len(gen), srv, len(srv))
	return srv, nil
}

// pinTo makes the server's process start on cpus, under taskset (util-linux), with
// GOMAXPROCS set to their count.
func (s *server) pinTo(cpus []int) error {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("-pin: %w (util-linux)", err)
	}
	list := ""
	for i, c := range cpus {
		if i > 0 {
			list += ","
		}
		list += strconv.Itoa(c)
	}
	s.cmd.Args = append([]string{"taskset", "-c", list}, s.cmd.Args...)
	s.cmd.Path = taskset
	if s.cmd.Env == nil {
		s.cmd.Env = os.Environ()
	}
	s.cmd.Env = append(s.cmd.Env, "GOMAXPROCS="+strconv.Itoa(len(cpus)))
	return nil
}
