package proxy

import (
	"bytes"
	"io"
)

// crlfWriter repairs line endings between the client's message and the
// upstream DATA writer: a bare LF and a bare CR each become CRLF, and CRLF
// passes through unchanged. It is not safe for concurrent use.
//
// RFC 5321 allows CR and LF in the data only as CRLF, but some senders,
// such as scripts that build a message with "\n", send bare LF, so the
// bridge repairs rather than rejects. The client must still end the data
// with CRLF "." CRLF, because go-smtp's server ends DATA only there and
// passes a bare CR or LF through as data. The repaired data goes into
// dataWriter, which dot-stuffs every line that starts with ".", as
// net/textproto's DotWriter does. So a "\n.\n" inside the data goes
// upstream as CRLF ".." CRLF. No bare CR or LF can end the message early
// at a server that takes either as a line ending, or pass the rest of the
// data off as a second transaction.
type crlfWriter struct {
	w io.Writer
	// afterCR is set when the last byte seen was a CR, which has already
	// gone out as CRLF. An LF that follows completes that line ending
	// and is dropped.
	afterCR bool
	// repaired counts the bare CRs and LFs that became CRLF.
	repaired int64
}

var crlf = []byte("\r\n")

func (c *crlfWriter) Write(p []byte) (int, error) {
	if !c.afterCR && onlyCRLF(p) {
		// The common case, checked with the assembly of bytes.Count.
		return c.w.Write(p)
	}

	n := 0
	for len(p) > 0 {
		if c.afterCR {
			c.afterCR = false
			if p[0] == '\n' {
				p = p[1:]
				n++
				continue
			}
			c.repaired++
		}

		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			if _, err := c.w.Write(p); err != nil {
				return n, err
			}
			return n + len(p), nil
		}
		if _, err := c.w.Write(p[:i]); err != nil {
			return n, err
		}
		if _, err := c.w.Write(crlf); err != nil {
			return n, err
		}
		if p[i] == '\r' {
			c.afterCR = true
		} else {
			c.repaired++
		}
		p = p[i+1:]
		n += i + 1
	}
	return n, nil
}

// onlyCRLF reports whether every CR and LF in p is part of a CRLF.
func onlyCRLF(p []byte) bool {
	pairs := bytes.Count(p, crlf)
	return bytes.Count(p, crlf[:1]) == pairs && bytes.Count(p, crlf[1:]) == pairs
}
