// Command procs makes the process shapes the discovery tests need, chosen
// by its first argument:
//
//	threads N       start N more OS threads, let them exit one by one
//	                (each its own exit in the kernel), then exit; prints
//	                the peak thread count
//	leader-exit     the main (leader) thread exits alone; another thread
//	                keeps the process alive until stdin is closed
//	exec-thread P…  a non-leader thread execs P with its arguments
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func init() {
	// The main goroutine stays on the leader thread (leader-exit,
	// exec-thread rely on it).
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: procs threads N | leader-exit | exec-thread PROG ARGS...")
	}
	switch os.Args[1] {
	case "threads":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		threads(n)
	case "leader-exit":
		leaderExit()
	case "exec-thread":
		execThread(os.Args[2:])
	default:
		fail("unknown mode " + os.Args[1])
	}
}

// threads starts n goroutines each locked to its own thread; a goroutine
// that returns while locked makes the runtime terminate its thread.
func threads(n int) {
	var started, exiting sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	exiting.Add(n)
	for range n {
		go func() {
			defer exiting.Done()
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			started.Done()
			<-release
		}()
	}
	started.Wait()
	peak := taskCount()
	close(release)
	exiting.Wait()
	// Let the runtime terminate the threads before the process exits, so
	// their exits are separate from the process's. (It may start a few
	// new ones meanwhile: wait for half.)
	for i := 0; i < 500 && taskCount() > peak-n/2; i++ {
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Printf("peak %d after %d\n", peak, taskCount())
}

func taskCount() int {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fail(err.Error())
	}
	return len(entries)
}

// leaderExit ends the leader thread with the exit syscall (not
// exit_group): the process lives on in its other threads. The garbage
// collector is off: it could not stop the vanished thread's goroutine.
func leaderExit() {
	debug.SetGCPercent(-1)
	runtime.GOMAXPROCS(4)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Println("leader exiting")
	syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
}

// execThread execs args from a thread that is not the leader: the kernel
// gives the exec'ing thread the leader's pid.
func execThread(args []string) {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		if syscall.Gettid() == os.Getpid() {
			done <- fmt.Errorf("goroutine on the leader thread")
			return
		}
		done <- syscall.Exec(args[0], args, os.Environ())
	}()
	fail(fmt.Sprint(<-done))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "procs:", msg)
	os.Exit(2)
}
