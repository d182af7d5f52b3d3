// Command server is the stand-in for an Isabelle server that the ism
// example builds (CGO_ENABLED=0, so it runs in any image) and pushes into
// each of its instances. It answers one request per line on TCP:
//
//	ping              pong <hostname>
//	read PATH         the file's content, newlines escaped as \n
//	write PATH TEXT   writes TEXT to PATH, answers ok
//	ls DIR            the directory's entries, space-separated
//
// and "error: ..." when a request fails.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
)

func main() {
	addr := flag.String("listen", ":4711", "TCP `address` to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewScanner(c)
	for r.Scan() {
		if _, err := fmt.Fprintln(c, answer(r.Text())); err != nil {
			return
		}
	}
}

func answer(req string) string {
	verb, arg, _ := strings.Cut(req, " ")
	switch verb {
	case "ping":
		h, _ := os.Hostname()
		return "pong " + h
	case "read":
		b, err := os.ReadFile(arg)
		if err != nil {
			return "error: " + err.Error()
		}
		return strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", `\n`)
	case "write":
		p, text, _ := strings.Cut(arg, " ")
		if err := os.WriteFile(p, []byte(text+"\n"), 0o644); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	case "ls":
		es, err := os.ReadDir(arg)
		if err != nil {
			return "error: " + err.Error()
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return strings.Join(names, " ")
	}
	return "error: unknown request " + verb
}
