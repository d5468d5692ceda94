package proxy

import (
	"bufio"
	"bytes"
	"net"
	"net/textproto"
	"strings"
)

// maxHeaderScan bounds how much of a message is kept to find its
// Message-ID for the log.
const maxHeaderScan = 64 * 1024

// messageMeta collects the header section of a message as it streams
// past, to log its Message-ID. It never keeps the body.
type messageMeta struct {
	header []byte
	done   bool
}

func (m *messageMeta) write(p []byte) {
	if m.done {
		return
	}
	room := maxHeaderScan - len(m.header)
	if len(p) > room {
		p = p[:room]
	}
	m.header = append(m.header, p...)
	if i := bytes.Index(m.header, []byte("\r\n\r\n")); i >= 0 {
		m.header = m.header[:i+4]
		m.done = true
	} else if len(m.header) >= maxHeaderScan {
		m.done = true
	}
}

// messageID returns the Message-ID header, or "" when there is none.
func (m *messageMeta) messageID() string {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(m.header)))
	h, _ := r.ReadMIMEHeader()
	id := strings.TrimSpace(h.Get("Message-Id"))
	if len(id) > 200 {
		id = id[:200]
	}
	return id
}

func splitHostPort(addr string) (string, string, error) {
	return net.SplitHostPort(addr)
}
