"""A local SMTP server that accepts mail and records it, for the SMTP mail backend (smtplib talks to it).

with FakeSmtp() as smtp:              # smtp.port; smtp.messages: the raw messages it accepted
    smtp.quit_reply = "421 4.3.2 Shutting down"   # answer QUIT like a server going away
"""

from __future__ import annotations

import socketserver
from email import message_from_bytes, policy

from tests.fakes.serving import ServedInThread


class FakeSmtp(ServedInThread):
    def __init__(self):
        self.messages: list = []  # email.message.EmailMessage, in the order accepted
        self.quit_reply = "221 2.0.0 Bye"
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                self.reply("220 fake.smtp ESMTP")
                while line := self.rfile.readline():
                    verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-fake.smtp")
                        self.reply("250 8BITMIME")
                    elif verb == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        lines = []
                        while (data := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(data[1:] if data.startswith(b"..") else data)
                        fake.messages.append(message_from_bytes(b"".join(lines), policy=policy.default))
                        self.reply(f"250 2.0.0 Ok: queued as {len(fake.messages)}")
                    elif verb == "QUIT":
                        self.reply(fake.quit_reply)
                        return
                    else:  # HELO, MAIL, RCPT, RSET, NOOP
                        self.reply("250 2.0.0 Ok")

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        super().__init__(server)
