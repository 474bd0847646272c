package relay

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestLingerConnCoalescesAShortRead(t *testing.T) {
	client, server := tcpPair(t)
	c := newLingerConn(client, 300*time.Millisecond)
	if _, ok := c.(*lingerConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", c)
	}
	server.Write([]byte("begin|"))
	go func() {
		time.Sleep(20 * time.Millisecond) // well inside the linger
		server.Write([]byte("insert|commit|"))
	}()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "begin|insert|commit|" {
		t.Fatalf("one read returned %q, want the three messages", got)
	}
}

func TestLingerConnFullReadDoesNotWait(t *testing.T) {
	client, server := tcpPair(t)
	// With an hour of linger, a read that waited would hang the test.
	c := newLingerConn(client, time.Hour)
	server.Write(bytes.Repeat([]byte("x"), 100))
	buf := make([]byte, 100)
	done := make(chan int, 1)
	go func() {
		n, _ := io.ReadFull(c, buf[:40])
		m, _ := io.ReadFull(c, buf[40:])
		done <- n + m
	}()
	select {
	case n := <-done:
		if n != 100 {
			t.Fatalf("read %d bytes, want 100", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read that filled its buffer waited for the linger")
	}
}

func TestLingerConnReportsCloseOnTheNextRead(t *testing.T) {
	client, server := tcpPair(t)
	c := newLingerConn(client, 50*time.Millisecond)
	server.Write([]byte("last"))
	server.Close()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "last" {
		t.Fatalf("read %q, %v; want the last bytes and no error", buf[:n], err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("next read: %v, want io.EOF", err)
	}
}

func TestLingerConnOffOrWithoutDescriptor(t *testing.T) {
	client, _ := tcpPair(t)
	if c := newLingerConn(client, 0); c != client {
		t.Fatal("a zero linger wrapped the connection")
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if c := newLingerConn(p1, time.Millisecond); c != p1 {
		t.Fatal("a connection without a file descriptor was wrapped")
	}
}
