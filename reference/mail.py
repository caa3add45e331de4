"""Outgoing email over SMTP, with headers naming the task and the sender."""

from __future__ import annotations

import asyncio
import os
import smtplib
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

from reference.config import MailSettings
from reference.models import iso

SMTP_TIMEOUT = 10.0


def task_message(
    mail: MailSettings,
    *,
    task: str,
    occurrence: datetime,
    instance: str,
    subject: str,
    body: str,
) -> EmailMessage:
    """A message to mail.digest_to carrying who sent it and for which occurrence."""
    message = EmailMessage()
    message["From"] = mail.from_address
    message["To"] = mail.digest_to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="clusterproof.local")
    message["X-Clusterproof-Task"] = task
    message["X-Clusterproof-Occurrence"] = iso(occurrence) or ""
    message["X-Clusterproof-Instance"] = instance
    message["X-Clusterproof-Pid"] = str(os.getpid())
    message.set_content(body)
    return message


def send(mail: MailSettings, message: EmailMessage) -> None:
    with smtplib.SMTP(mail.smtp_host, mail.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.send_message(message)


async def send_async(mail: MailSettings, message: EmailMessage) -> None:
    # smtplib blocks; a thread keeps the event loop serving requests.
    await asyncio.to_thread(send, mail, message)
