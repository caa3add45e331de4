from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reference.routers.uploads import safe_name


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # Uploads never touch the database; one kind is enough.
    return f"sqlite:///{tmp_path}/clusterproof.db"


def test_upload_is_stored(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/upload", files={"file": ("report.pdf", b"%PDF-1")})
    assert response.status_code == 201
    name = response.json()["name"]
    assert name.endswith("-report.pdf")
    assert (tmp_path / "uploads" / name).read_bytes() == b"%PDF-1"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".env", "env"),
        ("...hidden", "hidden"),
        ("a b/c d.txt", "c_d.txt"),
        ("résumé.txt", "r_sum_.txt"),
    ],
)
def test_names_are_sanitised(
    client: TestClient, tmp_path: Path, given: str, stored: str
) -> None:
    assert safe_name(given) == stored
    response = client.post("/upload", files={"file": (given, b"x")})
    assert response.status_code == 201
    name = response.json()["name"]
    assert name.split("-", 1)[1] == stored
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [name]


@pytest.mark.parametrize("given", ["..", "/", "...", "\\", "." * 3000])
def test_unusable_names_are_a_short_400(client: TestClient, given: str) -> None:
    response = client.post("/upload", files={"file": (given, b"x")})
    assert response.status_code == 400
    assert response.json()["detail"].endswith("' has no usable characters")
    assert len(response.content) < 300


def test_upload_over_the_limit_is_413(client: TestClient, tmp_path: Path) -> None:
    over = client.post("/upload", files={"file": ("big.bin", b"x" * 1025)})
    assert over.status_code == 413
    assert over.json()["detail"] == "upload exceeds uploads.max_bytes (1024 bytes)"
    huge = client.post("/upload", files={"file": ("huge.bin", b"x" * 200_000)})
    assert huge.status_code == 413
    assert not (tmp_path / "uploads").exists() or not any(
        (tmp_path / "uploads").iterdir()
    )
    exact = client.post("/upload", files={"file": ("fits.bin", b"x" * 1024)})
    assert exact.status_code == 201


def test_upload_needs_a_file(client: TestClient) -> None:
    note_only = client.post("/upload", files={"note": (None, "x")})
    assert note_only.status_code == 422
    assert client.post("/upload", json={"file": "x"}).status_code == 415
