#!/usr/bin/env python3
"""Writes the fuzz targets' starting corpora from the recorded ComfyUI
traffic in ../fixtures (and a dictionary for the prompt target).

    fuzz/seed.py OUT_DIR    # OUT_DIR/<target>/... and OUT_DIR/prompt.dict

Seeds are derived at each run rather than kept in git, so they follow the
fixtures. Only the standard library is used.
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OLD = FIXTURES / "comfyui-0.3.64"
TRACE = json.loads((FIXTURES / "comfyui-0.33.0" / "trace.json").read_text())


def write(out: Path, target: str, data: bytes) -> None:
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def text_frames():
    """Every recorded WebSocket text frame, as sent."""
    for path in sorted(OLD.glob("ws-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                yield line
    for value in TRACE.values():
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "type" in item:
                    yield json.dumps(item)


def history_answers():
    """Recorded `/history` answers (prompt id → item)."""
    yield json.loads((OLD / "history-success.json").read_text())
    for key in ("history_one", "history_all_max2"):
        value = TRACE.get(key)
        if isinstance(value, list):
            answer = value[1] if isinstance(value[0], int) else dict([value])
            if isinstance(answer, dict):
                yield answer


def recorded_prompts():
    """The API-format graphs that history kept, as `POST /prompt` bodies."""
    for answer in history_answers():
        for item in answer.values():
            if isinstance(item, dict) and isinstance(item.get("prompt"), list):
                _, prompt_id, graph, extra, targets = item["prompt"][:5]
                yield {"prompt": graph, "client_id": "fuzz"}
                yield {"prompt": graph, "prompt_id": prompt_id, "partial_execution_targets": targets}
                yield {"prompt": graph, "extra_data": extra, "front": True, "number": 3}


def worker_frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, len(payload)) + payload


def multipart(boundary: str, parts) -> bytes:
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: image/png\r\n"
        body += b"\r\n" + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return boundary.encode() + b"\n" + body


def main(out: Path) -> None:
    frames = list(text_frames())
    answers = list(history_answers())

    for frame in frames:
        write(out, "backend_frames", frame.encode())
    for answer in answers:
        write(out, "backend_frames", json.dumps(answer).encode())
    preview_meta = json.dumps({"node_id": "3", "prompt_id": "6abd57a6-6a1e-45c9-b10c-dd1ecbfb3a34"}).encode()
    write(out, "backend_frames", struct.pack(">II", 4, len(preview_meta)) + preview_meta + b"\x89PNG")
    write(out, "backend_frames", struct.pack(">II", 1, 2) + b"\xff\xd8")

    for body in recorded_prompts():
        write(out, "prompt", json.dumps(body).encode())
    for key, value in TRACE.items():
        if key.startswith("validation_") or key == "value_out_of_range":
            write(out, "prompt", json.dumps(value[1]).encode())

    dictionary = set()
    catalogue = json.loads((OLD / "object_info.json").read_text())
    for class_name, info in catalogue.items():
        dictionary.add(class_name)
        for group in info.get("input", {}).values():
            if isinstance(group, dict):
                dictionary.update(group.keys())
    dictionary.update(["prompt", "class_type", "inputs", "_meta", "title", "client_id",
                       "prompt_id", "partial_execution_targets", "extra_data", "front", "number"])
    (out / "prompt.dict").write_text(
        "".join(f"{json.dumps(json.dumps(word))}\n" for word in sorted(dictionary) if word.isascii() and word.isprintable()))

    for raw in ["workflows/a b.json", "workflows%2Fa%20b.json", "100%.json", "../x", "a/../../b",
                "C:\\x", "sub\\x.png", "x.png [input]\nignored\n", "pasted/image.png\noutput\nsub/dir",
                "6abd57a6-6a1e-45c9-b10c-dd1ecbfb3a34", "Alice", "./a/./b/", "a" * 300]:
        write(out, "paths", raw.encode())

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    write(out, "upload_form", multipart("XyZ", [("image", "a.png", png)]))
    write(out, "upload_form", multipart("----WebKitFormBoundary7MA4YWxkTrZu0gW", [
        ("image", "photo (1).png", png), ("type", None, b"input"),
        ("subfolder", None, b"pasted"), ("overwrite", None, b"true")]))
    write(out, "upload_form", multipart("b", [("image", "../x.png", png), ("subfolder", None, b"../../etc")]))
    write(out, "upload_form", multipart("b", [("type", None, b"temp"), ("image", "m.png", png * 200)]))

    write(out, "worker_stream", b"\x07" + b"".join(
        worker_frame(2, frame.encode()) for frame in frames[:6]) + worker_frame(5, b'{"outcome": "success"}'))
    header = json.dumps({"filename": "a_00001_.png", "subfolder": "", "type": "output"}).encode()
    write(out, "worker_stream", b"\x03" + worker_frame(1, b'{"state": "queued"}')
          + worker_frame(3, struct.pack(">II", 1, 2) + b"\xff\xd8")
          + worker_frame(4, struct.pack(">I", len(header)) + header + png)
          + worker_frame(6, json.dumps({"message": "refused", "rejected": TRACE["validation_missing_input"][1]}).encode()))
    write(out, "worker_stream", b"\x01" + worker_frame(5, b'{"outcome": "interrupted"}') + b"\x00")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
