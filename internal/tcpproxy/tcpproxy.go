// Package tcpproxy is a TCP proxy for tests that simulate a broker outage
// without touching the broker: put it between a client and the real server,
// then Cut or Blackhole the link and Restore it.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Mode is what the proxy does with connections.
type Mode int

const (
	// Forward relays bytes between the client and the target.
	Forward Mode = iota
	// Refuse accepts each new connection and closes it at once, as a
	// server that went away would (the client reads EOF or a reset).
	Refuse
	// Blackhole accepts new connections and never answers: the client's
	// reads and dials time out, as with a network partition.
	Blackhole
)

// Proxy listens on a local port and forwards each connection to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	mode   Mode
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 (a free port) that forwards to target
// (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port clients should dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every open connection and refuses new ones until Restore.
func (p *Proxy) Cut() { p.set(Refuse) }

// Blackhole closes every open connection and holds new ones silent until
// Restore (which then closes them).
func (p *Proxy) Blackhole() { p.set(Blackhole) }

// Restore forwards new connections again. Connections held by Blackhole are
// closed.
func (p *Proxy) Restore() { p.set(Forward) }

func (p *Proxy) set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	p.closeConnsLocked()
}

func (p *Proxy) closeConnsLocked() {
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops the proxy, closes every connection and waits for its
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.closeConnsLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c; it reports false (and closes c) when the proxy closed.
func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		switch mode {
		case Refuse:
			c.Close()
		case Blackhole:
			p.track(c) // closed by Restore or Close
		default:
			p.wg.Add(1)
			go p.forward(c)
		}
	}
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			client.Close()
			server.Close()
			p.untrack(client, server)
		})
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(server, client)
		done()
	}()
	io.Copy(client, server)
	done()
}
