package clients

import "testing"

// curlArgs returns a command line that sends m with curl's SMTP support,
// with --login-options choosing the SASL mechanism.
func curlArgs(p *bridgeProc, mech string, m corpusMessage) []string {
	args := []string{
		"--silent", "--show-error",
		// The URL's path is the name curl sends in EHLO.
		"--url", "smtp://" + p.Addr + "/curl.test",
		"--user", testUser + ":" + testPassword,
		"--login-options", "AUTH=" + mech,
		"--mail-from", m.From,
	}
	for _, to := range m.To {
		args = append(args, "--mail-rcpt", to)
	}
	return append(args, "--upload-file", m.Path)
}

func TestCurl(t *testing.T) {
	t.Parallel()
	curl := requireTool(t, "curl")
	p := startBridge(t)
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		for _, m := range loadCorpus(t) {
			t.Run(mech+"/"+m.Name, func(t *testing.T) {
				skip := len(p.Gmail.Messages())
				runClient(t, "", curl, curlArgs(p, mech, m)...)
				if m.ToIDNA != nil {
					// curl converts the domains to A-labels before it
					// sends RCPT, and sends the local part in UTF-8.
					m.To = m.ToIDNA
				}
				expectOneMessage(t, p, skip, m, mech)
			})
		}
	}
	t.Run("PLAIN/"+bigAttachmentName, func(t *testing.T) {
		m := bigMessage(t)
		skip := len(p.Gmail.Messages())
		runClient(t, "", curl, curlArgs(p, "PLAIN", m)...)
		expectOneMessage(t, p, skip, m, "PLAIN")
	})
}
