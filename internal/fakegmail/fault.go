package fakegmail

import (
	"time"

	"github.com/emersion/go-smtp"
)

// Stage is the point of a session where a Fault fires.
type Stage int

const (
	// StageGreeting fires when the client connects, before the 220.
	StageGreeting Stage = iota + 1
	// StageAuth fires on the AUTH command, before the mechanism runs.
	StageAuth
	// StageMail fires on MAIL, StageRcpt on each RCPT.
	StageMail
	StageRcpt
	// StageData fires on the DATA command, in place of the 354 reply.
	StageData
	// StageDataBody fires after Fault.AfterBytes bytes of the message.
	StageDataBody
	// StageDataEnd fires after the whole message, before the reply.
	StageDataEnd
)

// Always makes a Fault fire every time its stage is reached.
const Always = -1

// Fault makes the server misbehave at a stage. It waits for Delay, then
// closes the TCP connection if Drop is set, or else sends Reply if it is
// not nil. With neither, it only delays. A Reply with code 421 closes the
// connection after the reply, at any stage.
type Fault struct {
	Stage Stage
	Reply *smtp.SMTPError
	Drop  bool
	Delay time.Duration
	// AfterBytes is the number of message bytes read before a
	// StageDataBody fault fires.
	AfterBytes int64
	// Times is how often the fault fires: 0 and 1 mean once, Always means
	// every time.
	Times int
}

// AddFault arms f. Faults of one stage fire in the order they were added.
// It may be called while clients are connected.
func (s *Server) AddFault(f Fault) {
	if f.Times == 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults disarms every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns the first armed fault for stage and counts it as fired.
func (s *Server) takeFault(stage Stage) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Stage != stage {
			continue
		}
		fired := *f
		if f.Times != Always {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return fired, true
	}
	return Fault{}, false
}
