package proxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
)

// maxConnAge bounds how long an upstream connection is reused.
// NOTE: Gmail documents no limit on the life of an authenticated SMTP
// connection; 30 minutes is a conservative guess.
const maxConnAge = 30 * time.Minute

// pool keeps authenticated upstream connections per account for reuse,
// so a burst of messages costs one TLS handshake and one login instead of
// one each. It also bounds the connections open per account, in use and
// idle together, and queues sessions beyond that bound. It is safe for
// concurrent use.
type pool struct {
	dialer *dialer
	// settings returns the current pool configuration.
	settings func() config.Pool

	mu       sync.Mutex
	accounts map[string]*accountConns
	closed   bool
	// closing counts connections being closed in the background.
	closing sync.WaitGroup
	stop    chan struct{}
	done    chan struct{}
}

// accountConns is the pool's state for one account.
type accountConns struct {
	idle []idleConn // most recently used last
	// open counts the connections held against MaxConns: in use, idle,
	// and being dialed.
	open int
	// waiters are sessions waiting for a connection, oldest first. A
	// waiter is woken by closing its channel.
	waiters []chan struct{}
}

type idleConn struct {
	up    *upstream
	since time.Time
}

// poolBusyError means every connection an account may open was in use
// for as long as a session may wait.
type poolBusyError struct {
	account  string
	maxConns int
	waited   time.Duration
}

func (e *poolBusyError) Error() string {
	return fmt.Sprintf("all %d upstream connections of %s stayed busy for %v", e.maxConns, e.account, e.waited)
}

func newPool(d *dialer, settings func() config.Pool) *pool {
	p := &pool{
		dialer:   d,
		settings: settings,
		accounts: make(map[string]*accountConns),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go p.reap()
	return p
}

// account returns the state of the account, creating it. p.mu must be
// held.
func (p *pool) account(name string) *accountConns {
	a, ok := p.accounts[name]
	if !ok {
		a = &accountConns{}
		p.accounts[name] = a
	}
	return a
}

// get returns an idle connection of the account that is still alive, or
// a new one. With fresh set it skips the idle connections. When the
// account already has MaxConns connections open, get waits for one to be
// released, until ctx is done or the dial timeout passes.
func (p *pool) get(ctx context.Context, prov *auth.Provider, account string, fresh bool) (*upstream, error) {
	var timeout <-chan time.Time
	start := time.Now()
	woken := false
	for {
		cfg := p.settings()
		p.mu.Lock()
		a := p.account(account)
		if !fresh {
			if up := p.takeIdle(ctx, a, prov, cfg); up != nil {
				return up, nil
			}
			// Closing the unusable idle connections may have dropped
			// the account's state.
			a = p.account(account)
		}
		if a.open < max(cfg.MaxConns, 1) {
			a.open++
			p.mu.Unlock()
			up, err := p.dialer.connect(ctx, prov, account)
			if err != nil {
				p.mu.Lock()
				p.forgetLocked(account, a)
				p.mu.Unlock()
				return nil, err
			}
			return up, nil
		}
		if fresh && len(a.idle) > 0 {
			// A fresh connection is needed at the cap: the oldest idle
			// one makes room.
			old := a.idle[0]
			a.idle = a.idle[1:]
			p.forgetLocked(account, a)
			p.closeLater(old.up, true)
			p.mu.Unlock()
			continue
		}
		// A waiter that was woken but lost the connection to a newcomer
		// keeps its place at the head of the queue.
		wake := make(chan struct{})
		if woken {
			a.waiters = append([]chan struct{}{wake}, a.waiters...)
		} else {
			a.waiters = append(a.waiters, wake)
		}
		p.mu.Unlock()

		if timeout == nil {
			timer := time.NewTimer(p.dialer.limits().DialTimeout)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-wake:
			woken = true
		case <-ctx.Done():
			p.leaveQueue(account, wake)
			return nil, ctx.Err()
		case <-timeout:
			p.leaveQueue(account, wake)
			return nil, &poolBusyError{account: account, maxConns: cfg.MaxConns,
				waited: time.Since(start).Round(time.Millisecond)}
		}
	}
}

// takeIdle pops the most recently used idle connection that is still
// usable and returns it with p.mu released. Without one, it returns nil
// with p.mu still held. Connections that expired, belong to a replaced
// provider or were closed by the server are closed on the way.
func (p *pool) takeIdle(ctx context.Context, a *accountConns, prov *auth.Provider, cfg config.Pool) *upstream {
	for len(a.idle) > 0 {
		last := a.idle[len(a.idle)-1]
		a.idle = a.idle[:len(a.idle)-1]
		up := last.up
		if time.Since(last.since) < cfg.IdleTimeout && time.Since(up.created) < maxConnAge && up.prov == prov {
			p.mu.Unlock()
			// The server may have closed the connection while it was
			// idle, or sent a 421 before closing it.
			if connAlive(up.raw) {
				up.reused = true
				return up
			}
			loggerFrom(ctx, p.dialer.log).Debug("pooled upstream connection was closed by the server", "account", up.account)
			p.mu.Lock()
			p.forgetLocked(up.account, a)
			p.closeLater(up, false)
			continue
		}
		p.forgetLocked(up.account, a)
		p.closeLater(up, true)
	}
	return nil
}

// leaveQueue removes a waiter that gives up. If it had been woken
// already, the wake-up passes to the next waiter.
func (p *pool) leaveQueue(account string, wake chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.account(account)
	for i, w := range a.waiters {
		if w == wake {
			a.waiters = append(a.waiters[:i], a.waiters[i+1:]...)
			p.dropIfUnused(account, a)
			return
		}
	}
	p.wakeOne(a)
}

// wakeOne wakes the oldest waiter of the account. p.mu must be held.
func (p *pool) wakeOne(a *accountConns) {
	if len(a.waiters) > 0 {
		close(a.waiters[0])
		a.waiters = a.waiters[1:]
	}
}

// forgetLocked takes a connection off the account's count and lets a
// waiter open another. p.mu must be held.
func (p *pool) forgetLocked(account string, a *accountConns) {
	a.open--
	p.wakeOne(a)
	p.dropIfUnused(account, a)
}

func (p *pool) dropIfUnused(account string, a *accountConns) {
	if a.open <= 0 && len(a.idle) == 0 && len(a.waiters) == 0 {
		delete(p.accounts, account)
	}
}

// release returns a connection whose last transaction ended, with a reply
// to the end of data, a rejected MAIL or a completed RSET. It is kept for
// reuse if there is room or a session waits for it, or else closed with
// QUIT.
func (p *pool) release(up *upstream) {
	cfg := p.settings()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.account(up.account)
	room := len(a.idle) < cfg.MaxIdle || len(a.waiters) > 0
	if !p.closed && cfg.MaxIdle > 0 && room && time.Since(up.created) < maxConnAge {
		a.idle = append(a.idle, idleConn{up: up, since: time.Now()})
		p.wakeOne(a)
		return
	}
	p.forgetLocked(up.account, a)
	p.closeLater(up, true)
}

// discard closes a connection that failed or is in an unknown state,
// without QUIT.
func (p *pool) discard(up *upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetLocked(up.account, p.account(up.account))
	p.closeLater(up, false)
}

// discardIdle closes every idle connection of the account.
func (p *pool) discardIdle(account string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.account(account)
	idle := a.idle
	a.idle = nil
	for _, c := range idle {
		p.forgetLocked(account, a)
		p.closeLater(c.up, true)
	}
	p.dropIfUnused(account, a)
}

// idleCount returns the number of idle connections of the account.
func (p *pool) idleCount(account string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.accounts[account]; ok {
		return len(a.idle)
	}
	return 0
}

// openCount returns the number of connections of the account, in use
// and idle.
func (p *pool) openCount(account string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.accounts[account]; ok {
		return a.open
	}
	return 0
}

// closeLater closes up in a goroutine; until the pool is closed, close
// waits for it. With quit it sends QUIT first, which waits for the
// server's reply. p.mu must be held.
func (p *pool) closeLater(up *upstream, quit bool) {
	closeConn := func() {
		if quit {
			up.close()
		} else {
			up.client.Close()
		}
	}
	if p.closed {
		// A session that outlived Shutdown releases its connection.
		go closeConn()
		return
	}
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		closeConn()
	}()
}

// reap closes connections idle for longer than the idle timeout. It
// checks twice per idle timeout, at most every 5 seconds.
func (p *pool) reap() {
	defer close(p.done)
	for {
		interval := min(max(p.settings().IdleTimeout/2, 100*time.Millisecond), 5*time.Second)
		timer := time.NewTimer(interval)
		select {
		case <-p.stop:
			timer.Stop()
			return
		case <-timer.C:
			p.expireIdle(time.Now())
		}
	}
}

func (p *pool) expireIdle(now time.Time) {
	idleTimeout := p.settings().IdleTimeout
	p.mu.Lock()
	defer p.mu.Unlock()
	for account, a := range p.accounts {
		kept := a.idle[:0]
		var expired []*upstream
		for _, c := range a.idle {
			if now.Sub(c.since) >= idleTimeout || now.Sub(c.up.created) >= maxConnAge {
				expired = append(expired, c.up)
			} else {
				kept = append(kept, c)
			}
		}
		a.idle = kept
		for _, up := range expired {
			p.forgetLocked(account, a)
			p.closeLater(up, true)
		}
	}
}

// close closes every idle connection, stops the reaper, and waits for the
// connections being closed. Connections released later are closed too.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for account, a := range p.accounts {
		for _, c := range a.idle {
			a.open--
			p.closeLater(c.up, true)
		}
		a.idle = nil
		p.dropIfUnused(account, a)
	}
	p.closed = true
	p.mu.Unlock()

	close(p.stop)
	<-p.done
	p.closing.Wait()
}
