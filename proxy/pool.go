package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/bridgemail/bridge/auth"
)

// maxConnAge bounds how long an upstream connection is reused. Gmail's
// limit on the life of an authenticated connection is not documented, so
// this is a conservative guess.
const maxConnAge = 30 * time.Minute

// pool keeps authenticated upstream connections per account for reuse,
// so a burst of messages costs one TLS handshake and one login instead of
// one each. It is safe for concurrent use.
type pool struct {
	dialer *dialer
	// settings returns the current MaxIdle and IdleTimeout; a negative
	// MaxIdle turns reuse off.
	settings func() (maxIdle int, idleTimeout time.Duration)

	mu     sync.Mutex
	idle   map[string][]idleConn
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

type idleConn struct {
	up    *upstream
	since time.Time
}

func newPool(d *dialer, settings func() (int, time.Duration)) *pool {
	p := &pool{
		dialer:   d,
		settings: settings,
		idle:     make(map[string][]idleConn),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go p.reap()
	return p
}

// get returns an idle connection of the account, or a new one.
func (p *pool) get(ctx context.Context, prov *auth.Provider, account string) (*upstream, error) {
	_, idleTimeout := p.settings()
	now := time.Now()

	p.mu.Lock()
	for conns := p.idle[account]; len(conns) > 0; conns = p.idle[account] {
		last := conns[len(conns)-1]
		p.idle[account] = conns[:len(conns)-1]
		if now.Sub(last.since) < idleTimeout && now.Sub(last.up.created) < maxConnAge && last.up.provider == prov.Name {
			p.mu.Unlock()
			return last.up, nil
		}
		go last.up.close()
	}
	p.mu.Unlock()

	return p.dialer.connect(ctx, prov, account)
}

// release returns a connection after a transaction. A connection that is
// not clean, or that does not fit in the pool, is closed.
func (p *pool) release(up *upstream, clean bool) {
	maxIdle, _ := p.settings()
	p.mu.Lock()
	if !clean || p.closed || maxIdle <= 0 || len(p.idle[up.account]) >= maxIdle ||
		time.Since(up.created) >= maxConnAge {
		p.mu.Unlock()
		go up.close()
		return
	}
	p.idle[up.account] = append(p.idle[up.account], idleConn{up: up, since: time.Now()})
	p.mu.Unlock()
}

// discardIdle closes every idle connection of the account, after one of
// them turned out dead.
func (p *pool) discardIdle(account string) {
	p.mu.Lock()
	conns := p.idle[account]
	delete(p.idle, account)
	p.mu.Unlock()
	for _, c := range conns {
		go c.up.close()
	}
}

// idleCount returns the number of idle connections of the account.
func (p *pool) idleCount(account string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[account])
}

// reap closes connections idle for longer than the idle timeout.
func (p *pool) reap() {
	defer close(p.done)
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-ticker.C:
			_, idleTimeout := p.settings()
			var expired []*upstream
			p.mu.Lock()
			for account, conns := range p.idle {
				kept := conns[:0]
				for _, c := range conns {
					if now.Sub(c.since) >= idleTimeout {
						expired = append(expired, c.up)
					} else {
						kept = append(kept, c)
					}
				}
				if len(kept) == 0 {
					delete(p.idle, account)
				} else {
					p.idle[account] = kept
				}
			}
			p.mu.Unlock()
			for _, up := range expired {
				up.close()
			}
		}
	}
}

// close closes every idle connection and stops the reaper; later releases
// close their connection.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	all := p.idle
	p.idle = make(map[string][]idleConn)
	p.mu.Unlock()

	close(p.stop)
	<-p.done
	var wg sync.WaitGroup
	for _, conns := range all {
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.up.close()
			}()
		}
	}
	wg.Wait()
}
