"""Send one message file through an SMTP server with Python's smtplib.

The password is read from the environment variable SMTP_PASSWORD, so that
it is not on the command line. The message is sent as bytes, which smtplib
passes on unchanged apart from dot-stuffing.
"""

import argparse
import os
import smtplib
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--user", required=True)
    p.add_argument(
        "--mechanism",
        default="auto",
        choices=["auto", "PLAIN", "LOGIN"],
        help="SASL mechanism; auto lets SMTP.login choose",
    )
    p.add_argument(
        "--no-initial-response",
        action="store_true",
        help="send AUTH without an initial response and wait for the challenge",
    )
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--smtputf8", action="store_true", help="send MAIL with SMTPUTF8")
    p.add_argument("file")
    args = p.parse_args()

    password = os.environ["SMTP_PASSWORD"]
    with open(args.file, "rb") as f:
        data = f.read()

    with smtplib.SMTP(args.host, args.port, local_hostname="smtplib.test", timeout=120) as smtp:
        smtp.ehlo()
        if args.mechanism == "auto":
            smtp.login(args.user, password)
        else:
            smtp.user, smtp.password = args.user, password
            authobject = getattr(smtp, "auth_" + args.mechanism.lower())
            smtp.auth(args.mechanism, authobject, initial_response_ok=not args.no_initial_response)
        options = ["SMTPUTF8"] if args.smtputf8 else []
        refused = smtp.sendmail(args.sender, args.to, data, mail_options=options)
        if refused:
            print("refused recipients:", refused, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
