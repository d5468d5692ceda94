package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"sync"
	"time"
)

// bigResult is the bridge's memory around relaying one large message.
type bigResult struct {
	size          int
	before, after procUsage
	latency       time.Duration
}

// bigPhase relays one large message through a fresh bridge whose pool is
// warm, and reads its peak RSS before and after.
func (b *bench) bigPhase() (bigResult, error) {
	r := bigResult{size: b.opts.big}
	fake, info, err := b.startFake()
	if err != nil {
		return r, err
	}
	defer fake.stop()
	br, addr, err := b.startBridge(info)
	if err != nil {
		return r, err
	}
	defer br.stop()

	warmup := loadSpec{Mode: modeBridge, Addr: addr, Clients: 1, Messages: 3, Size: b.opts.size}
	if _, err := b.runLoadProcess(warmup); err != nil {
		return r, err
	}
	if r.before, err = readUsage(br.pid()); err != nil {
		return r, err
	}
	res, err := b.runLoadProcess(loadSpec{Mode: modeBridge, Addr: addr, Clients: 1, Messages: 1, Size: b.opts.big})
	if err != nil {
		return r, err
	}
	r.latency = res.Latencies[0]
	r.after, err = readUsage(br.pid())
	return r, err
}

// idleResult is the bridge's memory with many idle sessions open.
type idleResult struct {
	sessions      int
	before, after procUsage
}

// idlePhase opens idle sessions to a fresh bridge, each greeted and
// authenticated as a printer's would be, and reads the bridge's RSS while
// they are open.
func (b *bench) idlePhase() (idleResult, error) {
	r := idleResult{sessions: b.opts.idle}
	fake, info, err := b.startFake()
	if err != nil {
		return r, err
	}
	defer fake.stop()
	br, addr, err := b.startBridge(info)
	if err != nil {
		return r, err
	}
	defer br.stop()

	if r.before, err = readUsage(br.pid()); err != nil {
		return r, err
	}
	conns, err := openIdleSessions(addr, b.opts.idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return r, err
	}
	// Let the bridge's goroutines park and its allocator settle.
	time.Sleep(2 * time.Second)
	r.after, err = readUsage(br.pid())
	return r, err
}

// openIdleSessions opens n sessions that sent EHLO and AUTH PLAIN, 32 at
// a time, and returns them open.
func openIdleSessions(addr string, n int) ([]*textproto.Conn, error) {
	var (
		mu       sync.Mutex
		conns    []*textproto.Conn
		firstErr error
		wg       sync.WaitGroup
	)
	slots := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c, err := openIdleSession(addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return conns, fmt.Errorf("opening idle sessions: %d of %d failed, first: %w", n-len(conns), n, firstErr)
	}
	return conns, nil
}

func openIdleSession(addr string) (*textproto.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := textproto.NewConn(nc)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + benchUser + "\x00" + benchPassword))
	steps := []struct {
		name, cmd string
		code      int
	}{
		{"greeting", "", 220},
		{"EHLO", "EHLO idle.bench.example", 250},
		{"AUTH PLAIN", "AUTH PLAIN " + ir, 235},
	}
	for _, st := range steps {
		if st.cmd != "" {
			if err := c.PrintfLine("%s", st.cmd); err != nil {
				c.Close()
				return nil, err
			}
		}
		if _, _, err := c.ReadResponse(st.code); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}
