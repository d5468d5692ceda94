package clients

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// corpusMessage is a message that the clients send, with its envelope.
type corpusMessage struct {
	// Name is the file name under testdata/messages.
	Name string
	From string
	To   []string
	// UTF8 is set when the envelope needs SMTPUTF8 (RFC 6531).
	UTF8 bool
	// ToIDNA is To with each domain as an IDNA A-label, which is what
	// clients that convert domains with libidn2, such as curl, send.
	// Empty means the same as To.
	ToIDNA []string
	// Path and Data are filled in by loadCorpus.
	Path string
	Data []byte
}

// corpus lists every file in testdata/messages. The files have CRLF line
// endings and lines of at most 998 octets, as RFC 5322 requires.
var corpus = []corpusMessage{
	{Name: "scan-pdf-png.eml", From: testAccount, To: []string{"accounts@example.org"}},
	{Name: "quoted-printable.eml", From: testAccount, To: []string{"ops@example.org"}},
	{Name: "8bit.eml", From: testAccount, To: []string{"ops@example.org"}},
	{Name: "rfc2047.eml", From: testAccount,
		To: []string{"francoise@example.org", "renee@example.org"}},
	{Name: "smtputf8.eml", From: testAccount, UTF8: true,
		To:     []string{"jörg@bücher.example", "用户@例子.example"},
		ToIDNA: []string{"jörg@xn--bcher-kva.example", "用户@xn--fsqu00a.example"}},
	{Name: "long-lines.eml", From: testAccount, To: []string{"reports@example.org"}},
	{Name: "many-recipients.eml", From: testAccount, To: teamAddresses(60)},
}

func teamAddresses(n int) []string {
	to := make([]string, n)
	for i := range to {
		to[i] = fmt.Sprintf("team%02d@example.org", i+1)
	}
	return to
}

// loadCorpus reads the corpus and checks that its line endings survived
// the checkout.
func loadCorpus(t *testing.T) []corpusMessage {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "messages", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(corpus) {
		t.Fatalf("testdata/messages has %d files and the corpus lists %d", len(files), len(corpus))
	}

	msgs := make([]corpusMessage, len(corpus))
	for i, m := range corpus {
		m.Path = filepath.Join("testdata", "messages", m.Name)
		data, err := os.ReadFile(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkCRLF(data); err != nil {
			t.Fatalf("%s: %v (is .gitattributes missing?)", m.Path, err)
		}
		m.Data = data
		msgs[i] = m
	}
	return msgs
}

// asciiCorpus returns the messages whose envelope needs no SMTPUTF8, for
// clients that cannot send it.
func asciiCorpus(t *testing.T) []corpusMessage {
	t.Helper()
	var out []corpusMessage
	for _, m := range loadCorpus(t) {
		if !m.UTF8 {
			out = append(out, m)
		}
	}
	return out
}

// checkCRLF reports a bare CR or LF, or a line longer than 998 octets.
func checkCRLF(data []byte) error {
	line := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				return fmt.Errorf("bare CR at offset %d", i)
			}
		case '\n':
			if i == 0 || data[i-1] != '\r' {
				return fmt.Errorf("bare LF at offset %d", i)
			}
			line = 0
			continue
		}
		line++
		if line > 999 { // 998 octets and the CR
			return fmt.Errorf("line longer than 998 octets at offset %d", i)
		}
	}
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		return fmt.Errorf("no CRLF at the end")
	}
	return nil
}

// bigAttachmentBytes is the size of the attachment in the big message, the
// 25 MB that Gmail allows for attachments. Base64 makes the message
// 34211073 octets, under the 35882577 that Gmail advertises in SIZE.
const bigAttachmentBytes = 25_000_000

const bigAttachmentName = "big-attachment.eml"

var bigMessageOnce = sync.OnceValues(writeBigMessage)

// bigMessage returns a message with a 25 MB attachment, generated from a
// fixed seed so that every run sends the same bytes.
func bigMessage(t *testing.T) corpusMessage {
	t.Helper()
	m, err := bigMessageOnce()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func writeBigMessage() (corpusMessage, error) {
	attachment := make([]byte, bigAttachmentBytes)
	rng := rand.NewChaCha8([32]byte{'b', 'r', 'i', 'd', 'g', 'e'})
	rng.Read(attachment)
	encoded := base64.StdEncoding.EncodeToString(attachment)

	var b bytes.Buffer
	b.WriteString("From: \"MFP-4021 Scanner\" <scanner@example.com>\r\n" +
		"To: archive@example.org\r\n" +
		"Subject: Scanned from MFP-4021, 25 MB\r\n" +
		"Date: Mon, 07 Dec 2026 10:00:00 +0100\r\n" +
		"Message-ID: <big-25mb-0001@mfp-4021.office.example>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"big-boundary\"\r\n" +
		"\r\n" +
		"--big-boundary\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" +
		"A large scan.\r\n" +
		"--big-boundary\r\n" +
		"Content-Type: application/pdf; name=\"scan-large.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"scan-large.pdf\"\r\n" +
		"\r\n")
	for len(encoded) > 0 {
		n := min(76, len(encoded))
		b.WriteString(encoded[:n])
		b.WriteString("\r\n")
		encoded = encoded[n:]
	}
	b.WriteString("--big-boundary--\r\n")

	m := corpusMessage{
		Name: bigAttachmentName,
		From: testAccount,
		To:   []string{"archive@example.org"},
		Path: filepath.Join(workDir, "big-attachment.eml"),
		Data: b.Bytes(),
	}
	return m, os.WriteFile(m.Path, m.Data, 0o644)
}

// assertSameData fails the test unless got equals want, and shows where
// they first differ.
func assertSameData(t *testing.T, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-80)
	t.Errorf("upstream data (%d octets) differs from the message sent (%d octets) at offset %d:\n"+
		" got %q\nwant %q", len(got), len(want), i,
		got[from:min(len(got), i+80)], want[from:min(len(want), i+80)])
}
