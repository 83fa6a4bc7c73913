"""Mail backends: files under var/mail (development default), SMTP, and SendGrid's official SDK."""

from __future__ import annotations

import smtplib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from shop import clock


@dataclass
class Message:
    to: str
    sender: str
    subject: str
    text: str
    html: str
    event: str = ""
    # Stable per notification (jobs.message_id): a copy sent again after a crash carries the same
    # Message-ID, which receiving systems use to drop duplicates. A random one when not given.
    message_id: str = ""

    def as_email(self) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, self.to, self.subject
        msg["Message-ID"] = self.message_id or f"<{uuid.uuid4().hex}@shop>"
        msg["X-Shop-Event"] = self.event
        msg.set_content(self.text)
        msg.add_alternative(self.html, subtype="html")
        return msg


class FileBackend:
    """Writes each message as an .eml file: mail in development goes somewhere you can read."""

    def __init__(self, directory: str):
        self.directory = Path(directory)

    def send(self, message: Message) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = clock.now().strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{stamp}-{message.event or 'mail'}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message.as_email()))
        return path.name


class SmtpBackend:
    def __init__(self, host: str, port: int, username: str = "", password: str = "", starttls: bool = False):
        self.host, self.port, self.username, self.password, self.starttls = host, port, username, password, starttls

    def send(self, message: Message) -> str:
        """Returns once the server accepted the message (its answer to DATA); a failure after that
        (QUIT unanswered, the connection dropped) is not a failed send and must not cause a resend."""
        email = message.as_email()
        smtp = smtplib.SMTP(self.host, self.port, timeout=30)
        try:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(email)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return email["Message-ID"]


class SendGridBackend:
    """SendGrid's v3 API through its official SDK; the host is configurable (tests use a local fake).

    SendGrid's v3 mail send offers no idempotency key (unlike Stripe's API): a request repeated after
    a lost answer is a second mail. The job's claim and its `sent` mark are the only guard."""

    def __init__(self, api_key: str, host: str):
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(api_key=api_key, host=host)

    def send(self, message: Message) -> str:
        from sendgrid.helpers.mail import Mail

        mail = Mail(
            from_email=message.sender,
            to_emails=message.to,
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        response = self.client.send(mail)
        if response.status_code >= 300:
            raise RuntimeError(f"SendGrid answered {response.status_code}")
        return response.headers.get("X-Message-Id", "") if response.headers else ""


def backend_for(config) -> FileBackend | SmtpBackend | SendGridBackend:
    kind = config["MAIL_BACKEND"]
    if kind == "file":
        return FileBackend(config["MAIL_DIR"])
    if kind == "smtp":
        return SmtpBackend(
            config["SMTP_HOST"],
            config["SMTP_PORT"],
            config["SMTP_USERNAME"],
            config["SMTP_PASSWORD"],
            config["SMTP_STARTTLS"],
        )
    if kind == "sendgrid":
        return SendGridBackend(config["SENDGRID_API_KEY"], config["SENDGRID_API_HOST"])
    raise RuntimeError(f"MAIL_BACKEND must be file, smtp or sendgrid, not {kind!r}")
