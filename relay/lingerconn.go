package relay

import (
	"net"
	"syscall"
	"time"
)

// lingerConn coalesces the reads of a busy replication connection. The
// walsender writes Begin, Insert and Commit of a small transaction as separate
// messages, often in separate TCP segments, so at a few thousand events per
// second a plain reader makes several read system calls, and wakes the
// goroutines behind it, for every event. After a read that emptied the socket
// (it returned less than asked), lingerConn waits up to linger and then takes,
// without blocking, whatever else has arrived into the rest of the buffer.
//
// A read that filled the buffer never waits: a backlog is read at full speed.
// The price is up to linger added to an event's latency when the stream is
// quiet, which is why it is a setting (delivery.read_linger).
type lingerConn struct {
	net.Conn
	raw    syscall.RawConn
	linger time.Duration
}

// newLingerConn wraps c; it returns c itself when linger is zero or c has no
// file descriptor to read from without blocking.
func newLingerConn(c net.Conn, linger time.Duration) net.Conn {
	if linger <= 0 {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &lingerConn{Conn: c, raw: raw, linger: linger}
}

func (c *lingerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil || n == 0 || n >= len(p) {
		return n, err
	}
	time.Sleep(c.linger)
	return n + c.readReady(p[n:]), nil
}

// readReady reads what the socket holds now, without waiting. An error (the
// peer closed, a reset) is left for the next Read to report.
func (c *lingerConn) readReady(p []byte) int {
	var got int
	c.raw.Read(func(fd uintptr) bool {
		n, err := syscall.Read(int(fd), p)
		if err == nil && n > 0 {
			got = n
		}
		return true // never wait for readiness
	})
	return got
}
