// Command pause is the pod sandbox's process: it holds the pod's namespaces open and does nothing
// else until it is told to stop. It replaces the upstream pause image, which no registry here serves.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// Without a shared PID namespace there are no orphans to reap; SIGCHLD is ignored so none linger.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
