"""Uploads: one file per request, size-limited, stored under a safe name."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncGenerator
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

router = APIRouter(tags=["uploads"])

# Room for the multipart boundaries and part headers around the file.
FRAMING_ALLOWANCE = 16 * 1024
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadDirError(Exception):
    """uploads.dir is not a directory this process can create."""


def prepare_upload_dir(directory: Path) -> None:
    """Create directory if needed; raise UploadDirError if it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UploadDirError(
            f"uploads.dir {str(directory)!r} cannot be created ({exc.strerror}); "
            "point CLUSTERPROOF_UPLOADS__DIR at a directory"
        ) from None


def safe_name(filename: str) -> str:
    """A file name that cannot leave the upload dir or hide.

    safe_name("../../etc/passwd") -> "passwd"; safe_name(".env") -> "env"
    """
    base = re.split(r"[/\\]", filename)[-1]
    base = _UNSAFE.sub("_", base).lstrip("._-")[-MAX_NAME:]
    if not base:
        # Cut short: the 400 echoes a name of up to the multipart header limit.
        shown = filename[:MAX_NAME] + ("..." if len(filename) > MAX_NAME else "")
        raise HTTPException(400, f"file name {shown!r} has no usable characters")
    return base


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    # Counting the raw body stops an oversized upload after limit bytes,
    # whatever Content-Length claims; nothing beyond it is read.
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(request)
        yield chunk


def _too_large(request: Request) -> HTTPException:
    limit = request.app.state.settings.uploads.max_bytes
    return HTTPException(413, f"upload exceeds uploads.max_bytes ({limit} bytes)")


@router.post("/upload", status_code=201)
async def upload(request: Request) -> dict[str, object]:
    """Store the multipart field "file"; returns the stored name and size."""
    settings = request.app.state.settings.uploads
    limit = settings.max_bytes + FRAMING_ALLOWANCE
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send the file as multipart/form-data, field 'file'")

    parser = MultiPartParser(request.headers, _limited(request, limit), max_files=1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile) or file.filename is None:
            raise HTTPException(422, "a file in the multipart field 'file' is needed")
        if file.size is not None and file.size > settings.max_bytes:
            raise _too_large(request)
        stored = f"{secrets.token_hex(4)}-{safe_name(file.filename)}"
        size = await asyncio.to_thread(_store, file, Path(settings.dir), stored)
        return {"name": stored, "size": size}
    finally:
        await form.close()


def _store(file: UploadFile, directory: Path, name: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    file.file.seek(0)
    # O_EXCL: never overwrite, even if two processes pick the same name.
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(file.file, out)
        return out.tell()
