// Command body is a scriptable job for jobgate's tests: its arguments are
// a little program run in order, e.g. `echo hi stderr oops exit 3`.
//
//	event          print SCF_CUSTOM_CONTAINER_EVENT as one line
//	eventsum       print "len=<n> sha256=<hex>" of the event
//	filesum        the same of the file SCF_CUSTOM_CONTAINER_EVENT_FILE names
//	env NAME       print NAME=<value> (or NAME unset)
//	envsum         print "envtotal=<bytes>" (all KEY=value strings + NULs)
//	args           print os.Args[1:] as JSON
//	echo TEXT      print TEXT to stdout
//	stderr TEXT    print TEXT to stderr
//	lines N        print N numbered lines
//	sleep DUR      sleep (Go duration)
//	exit N         exit with code N
//	alloc MB       allocate and touch MB MiB of memory
//	spawn OP...    run the rest of the arguments as a child process of this
//	               body, wait for it and ignore how it ended
//	write MB PATH  write MB MiB to PATH, 1 MiB at a time, slowly enough to be seen
//	status         print NoNewPrivs, Seccomp and CapEff from /proc/self/status
//	netifs         print the network interfaces
//	addrs          print "addr <ip>" for each non-loopback IPv4 address
//	cat PATH       print a file
//	get URL        GET URL (2 s timeout): "get <status> <body>" or "get error <why>"
//	dial ADDR      open a TCP connection (2 s timeout): "dial ok" or "dial error <why>";
//	               ADDR "event" takes it from the event's "addr" field
//	listen PORT    accept TCP connections on PORT in the background, each
//	               answered "hello" and reported as "accepted <peer>"
//	whoami         print "uid=<n> gid=<n>"
//	onterm CODE    on SIGTERM print "got SIGTERM" and exit CODE
//	ignoreterm     ignore SIGTERM (as a PID 1 without a handler would)
//	post URL       POST the event to URL (headers X-Request-Id, X-Attempt),
//	               retrying for up to a minute until it answers 2xx
//	hold URL DUR   POST to URL (same headers) a body that streams for DUR,
//	               then ends: the receiver sees the run's start, and its end
//	               when the body completes or the process dies (the kernel
//	               closes the connection)
//
// With no arguments it prints the event.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"event"}
	}
	next := func(i *int) string {
		*i++
		if *i >= len(args) {
			fmt.Fprintln(os.Stderr, "body: missing operand")
			os.Exit(2)
		}
		return args[*i]
	}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "event":
			fmt.Println(os.Getenv("SCF_CUSTOM_CONTAINER_EVENT"))
		case "eventsum":
			e := os.Getenv("SCF_CUSTOM_CONTAINER_EVENT")
			fmt.Printf("len=%d sha256=%x\n", len(e), sha256.Sum256([]byte(e)))
		case "filesum":
			// The event file (large_events: file), read as the job would.
			b, err := os.ReadFile(os.Getenv("SCF_CUSTOM_CONTAINER_EVENT_FILE"))
			if err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
			fmt.Printf("len=%d sha256=%x\n", len(b), sha256.Sum256(b))
		case "env":
			n := next(&i)
			if v, ok := os.LookupEnv(n); ok {
				fmt.Printf("%s=%s\n", n, v)
			} else {
				fmt.Printf("%s unset\n", n)
			}
		case "envsum":
			total := 0
			for _, kv := range os.Environ() {
				total += len(kv) + 1
			}
			fmt.Printf("envtotal=%d\n", total)
		case "args":
			b, _ := json.Marshal(os.Args[1:])
			fmt.Println(string(b))
		case "post":
			if err := post(next(&i)); err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
		case "hold":
			url := next(&i)
			d, err := time.ParseDuration(next(&i))
			if err == nil {
				err = hold(url, d)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
		case "whoami":
			fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
		case "echo":
			fmt.Println(next(&i))
		case "stderr":
			fmt.Fprintln(os.Stderr, next(&i))
		case "lines":
			n, _ := strconv.Atoi(next(&i))
			for j := 1; j <= n; j++ {
				fmt.Printf("line %d\n", j)
			}
		case "sleep":
			d, err := time.ParseDuration(next(&i))
			if err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
			time.Sleep(d)
		case "exit":
			n, _ := strconv.Atoi(next(&i))
			os.Exit(n)
		case "alloc":
			mb, _ := strconv.Atoi(next(&i))
			keep := make([][]byte, 0, mb)
			for j := 0; j < mb; j++ {
				b := make([]byte, 1<<20)
				for k := range b {
					b[k] = byte(k)
				}
				keep = append(keep, b)
			}
			fmt.Printf("allocated %d MiB\n", len(keep))
		case "spawn":
			cmd := exec.Command(os.Args[0], args[i+1:]...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			err := cmd.Run()
			fmt.Printf("child ended: %v\n", err)
			return
		case "write":
			mb, _ := strconv.Atoi(next(&i))
			f, err := os.Create(next(&i))
			if err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
			chunk := make([]byte, 1<<20)
			for j := 0; j < mb; j++ {
				if _, err := f.Write(chunk); err != nil {
					fmt.Fprintln(os.Stderr, "body:", err)
					os.Exit(2)
				}
				if j%64 == 63 {
					time.Sleep(50 * time.Millisecond)
				}
			}
			f.Close()
			fmt.Printf("wrote %d MiB\n", mb)
		case "status":
			b, _ := os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "NoNewPrivs:") || strings.HasPrefix(l, "Seccomp:") || strings.HasPrefix(l, "CapEff:") {
					fmt.Println(strings.Join(strings.Fields(l), " "))
				}
			}
		case "netifs":
			ifs, _ := net.Interfaces()
			for _, ifc := range ifs {
				fmt.Println("if", ifc.Name)
			}
		case "addrs":
			as, _ := net.InterfaceAddrs()
			for _, a := range as {
				if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
					fmt.Println("addr", n.IP)
				}
			}
		case "cat":
			b, err := os.ReadFile(next(&i))
			if err != nil {
				fmt.Println("cat error", err)
			}
			os.Stdout.Write(b)
		case "get":
			c := http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get(next(&i))
			if err != nil {
				fmt.Println("get error", err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Println("get", resp.StatusCode, strings.TrimSpace(string(b)))
		case "dial":
			addr := next(&i)
			if addr == "event" {
				var ev struct{ Addr string }
				_ = json.Unmarshal([]byte(os.Getenv("SCF_CUSTOM_CONTAINER_EVENT")), &ev)
				addr = ev.Addr
			}
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				fmt.Println("dial error", err)
				continue
			}
			c.Close()
			fmt.Println("dial ok")
		case "listen":
			l, err := net.Listen("tcp", ":"+next(&i))
			if err != nil {
				fmt.Println("listen error", err)
				os.Exit(1)
			}
			fmt.Println("listening", l.Addr())
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Println("accepted", c.RemoteAddr())
					c.Write([]byte("hello\n"))
					c.Close()
				}
			}()
		case "ignoreterm":
			signal.Ignore(syscall.SIGTERM)
		case "onterm":
			code, _ := strconv.Atoi(next(&i))
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM)
			go func() {
				<-c
				fmt.Println("got SIGTERM")
				os.Exit(code)
			}()
		default:
			fmt.Fprintf(os.Stderr, "body: unknown op %q\n", args[i])
			os.Exit(2)
		}
	}
}

// post reports this run to a test's collector.
func post(url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(os.Getenv("SCF_CUSTOM_CONTAINER_EVENT")))
		if err != nil {
			return err
		}
		req.Header.Set("X-Request-Id", os.Getenv("JOBGATE_REQUEST_ID"))
		req.Header.Set("X-Attempt", os.Getenv("JOBGATE_ATTEMPT"))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("post %s: %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hold streams a request body to url for d: a byte every 50 ms, then the
// end of the body.
func hold(url string, d time.Duration) error {
	r, w := io.Pipe()
	go func() {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if _, err := w.Write([]byte{'.'}); err != nil {
				return
			}
		}
		w.Close()
	}()
	req, err := http.NewRequest(http.MethodPost, url, r)
	if err != nil {
		return err
	}
	req.Header.Set("X-Request-Id", os.Getenv("JOBGATE_REQUEST_ID"))
	req.Header.Set("X-Attempt", os.Getenv("JOBGATE_ATTEMPT"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("hold %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("hold %s: %s", url, resp.Status)
	}
	return nil
}
