"""The framing of element streams (corral.store.frames): whole frames come back whatever the
chunking, and damage costs exactly the damaged frames, never the reader."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from corral.store.frames import (
    HEADER_SIZE,
    MAGIC,
    MAX_BODY,
    Corrupt,
    Frame,
    FrameReader,
    encode_frame,
    scan_frames,
)

BODIES = [b"alpha", b"", b"charlie \xc7\x1e inside", bytes(range(256)) * 3, b"echo"]


def stream(bodies: list[bytes]) -> tuple[bytes, list[int]]:
    """The frames of ``bodies`` end to end, and where each one starts."""
    offsets, data = [], b""
    for body in bodies:
        offsets.append(len(data))
        data += encode_frame(body)
    return data, offsets


def feed_in(data: bytes, cuts: list[int], *, finish: bool = False) -> list[Frame | Corrupt]:
    reader = FrameReader()
    items: list[Frame | Corrupt] = []
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        items += reader.feed(data[start:stop])
    return items + reader.finish() if finish else items


def test_the_layout_is_magic_length_crc_body() -> None:
    frame = encode_frame(b"hello")
    assert frame == MAGIC + struct.pack("<II", 5, zlib.crc32(b"hello")) + b"hello"
    assert HEADER_SIZE == 10


def test_frames_round_trip_with_their_offsets() -> None:
    data, offsets = stream(BODIES)
    items, end = scan_frames(data)
    assert items == [Frame(offset, body) for offset, body in zip(offsets, BODIES, strict=True)]
    assert end == len(data)


def test_byte_by_byte_and_random_splits_give_the_same_frames() -> None:
    data, _ = stream(BODIES)
    whole, _ = scan_frames(data)
    assert feed_in(data, list(range(1, len(data)))) == whole
    rng = random.Random(12)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 20)))
        assert feed_in(data, cuts) == whole


def test_a_partial_frame_waits_for_its_bytes_and_the_cursor_stays_before_it() -> None:
    reader = FrameReader()
    assert reader.feed(A + B[:-1]) == [fa()]
    assert (reader.offset, reader.position) == (len(A), AB - 1)
    assert reader.feed(B[-1:]) == [Frame(len(A), b"bravo!")]
    assert reader.offset == reader.position == AB


def test_reading_on_from_a_persisted_cursor_gives_the_rest() -> None:
    data, offsets = stream(BODIES)
    reader = FrameReader(offsets[2])
    assert reader.feed(data[offsets[2] :]) == [Frame(offsets[i], BODIES[i]) for i in (2, 3, 4)]
    assert scan_frames(data, offsets[3]) == ([Frame(offsets[i], BODIES[i]) for i in (3, 4)], len(data))


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


def with_length(frame: bytes, length: int) -> bytes:
    return frame[:2] + struct.pack("<I", length) + frame[6:]


A, B, C, D = (encode_frame(body) for body in (b"alpha", b"bravo!", b"charlie", b"delta"))
AB = len(A) + len(B)
XX_LENGTH = int.from_bytes(b"xx" + MAGIC, "little")  # the length a stray MAGIC + b"xx" reads


def fa(offset: int = 0) -> Frame:
    return Frame(offset, b"alpha")


def fc(offset: int) -> Frame:
    return Frame(offset, b"charlie")


def fd(offset: int) -> Frame:
    return Frame(offset, b"delta")


# (what was done, the stream, what a live reader yields, what finish() adds)
# fmt: off
CORRUPTIONS: list[tuple[str, bytes, list[Frame | Corrupt], list[Frame | Corrupt]]] = [
    ("bit flip in a body", A + flip(B, 12) + C,
     [fa(), Corrupt(len(A), len(B), "crc mismatch"), fc(AB)], []),
    ("bit flip in a length", A + flip(B, 2) + C,
     [fa(), Corrupt(len(A), len(B), "crc mismatch"), fc(AB)], []),
    ("bit flip in a crc", A + flip(B, 7) + C,
     [fa(), Corrupt(len(A), len(B), "crc mismatch"), fc(AB)], []),
    ("bit flip in a magic", A + flip(B, 1) + C,
     [fa(), Corrupt(len(A), len(B), "bad magic c71f"), fc(AB)], []),
    ("a length of 2**32-1", A + with_length(B, 2**32 - 1) + C,
     [fa(), Corrupt(len(A), len(B), "length 4294967295 above MAX_BODY"), fc(AB)], []),
    ("a length just above MAX_BODY", A + with_length(B, MAX_BODY + 1) + C,
     [fa(), Corrupt(len(A), len(B), f"length {MAX_BODY + 1} above MAX_BODY"), fc(AB)], []),
    ("two damaged frames in a row make one span", A + flip(B, 12) + flip(C, 12) + D,
     [fa(), Corrupt(len(A), len(B) + len(C), "crc mismatch"), fd(AB + len(C))], []),
    ("garbage before the first frame", b"garbage!" + A + B,
     [Corrupt(0, 8, "bad magic 6761"), fa(8), Frame(8 + len(A), b"bravo!")], []),
    ("garbage holding a MAGIC between frames", A + MAGIC + b"xx" + C,
     [fa(), Corrupt(len(A), 4, f"length {XX_LENGTH} above MAX_BODY"), fc(len(A) + 4)], []),
    ("a truncated header at the end", A + B + C[:6],
     [fa(), Frame(len(A), b"bravo!")],
     [Corrupt(AB, 6, "truncated frame (6 bytes)")]),
    ("a truncated body at the end", A + B[:-2],
     [fa()], [Corrupt(len(A), len(B) - 2, f"truncated frame ({len(B) - 2} bytes)")]),
    ("a truncated body, then frames appended after it", A + B[:-2] + C + D,
     [fa(), Corrupt(len(A), len(B) - 2, "crc mismatch"), fc(AB - 2), fd(AB - 2 + len(C))], []),
    ("a truncated header, then frames appended after it", A + B[:5] + C,
     [fa(), Corrupt(len(A), 5, f"length {int.from_bytes(B[2:5] + C[:1], 'little')} above MAX_BODY"),
      fc(len(A) + 5)], []),
    ("a length damaged into a plausible larger one", A + with_length(B, 1 << 20) + C + D,
     [fa()],
     [Corrupt(len(A), len(B), f"truncated frame ({len(B) + len(C) + len(D)} bytes)"), fc(AB),
      fd(AB + len(C))]),
    ("a stray first byte of MAGIC at the end", A + b"\xc7",
     [fa()], [Corrupt(len(A), 1, "truncated frame (1 bytes)")]),
]
# fmt: on


@pytest.mark.parametrize(
    ("stream_", "live", "at_end"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_damage_costs_only_the_damaged_frames(
    stream_: bytes, live: list[Frame | Corrupt], at_end: list[Frame | Corrupt]
) -> None:
    assert scan_frames(stream_)[0] == live
    assert scan_frames(stream_, final=True)[0] == live + at_end
    assert feed_in(stream_, list(range(1, len(stream_)))) == live  # byte by byte
    assert feed_in(stream_, list(range(1, len(stream_))), finish=True) == live + at_end
    reader = FrameReader()
    reader.feed(stream_)
    assert reader.offset == (end_of(live[-1]) if live else 0)
    reader.finish()
    assert reader.offset == reader.position == len(stream_)


def end_of(item: Frame | Corrupt) -> int:
    return item.offset + (item.length if isinstance(item, Corrupt) else HEADER_SIZE + len(item.body))


@pytest.mark.parametrize(
    ("stream_", "items"), [(c[1], c[2] + c[3]) for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_the_offsets_tile_the_stream_after_finish(stream_: bytes, items: list[Frame | Corrupt]) -> None:
    assert [item.offset for item in items] == [0] + [end_of(item) for item in items[:-1]]
    assert end_of(items[-1]) == len(stream_)


def test_a_damaged_frame_resyncs_on_a_good_frame_inside_it_not_after_it() -> None:
    # Resynchronisation starts after the damaged frame's first byte, so a frame that a kill
    # cut short loses only itself even when its declared length covers the frames after it.
    torn = encode_frame(b"x" * 100)[:30]
    data = A + torn + C + D + encode_frame(b"y" * 200)
    items, end = scan_frames(data)
    assert items[:3] == [fa(), Corrupt(len(A), 30, "crc mismatch"), fc(len(A) + 30)]
    assert end == len(data)


def test_the_buffer_holds_one_partial_frame_not_the_garbage_before_it() -> None:
    reader = FrameReader()
    reader.feed(A + b"\x00" * 100_000)
    assert reader.offset == len(A)  # the damage is not decided until a good frame comes
    assert reader.position - reader.offset == 100_000
    assert len(reader._buf) <= 1
    assert reader.feed(C) == [Corrupt(len(A), 100_000, "bad magic 0000"), fc(len(A) + 100_000)]


def test_rewind_rereads_a_tail_its_writer_cut_off_and_wrote_again() -> None:
    reader = FrameReader()
    assert reader.feed(A + B[:7]) == [fa()]
    assert reader.rewind() == len(A)
    assert reader.feed(C + D) == [fc(len(A)), fd(len(A) + len(C))]


def test_finish_on_a_clean_stream_reports_nothing() -> None:
    reader = FrameReader()
    reader.feed(A + B)
    assert reader.finish() == []
    assert FrameReader().finish() == []


def test_a_body_above_max_body_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="MAX_BODY"):
        encode_frame(bytes(MAX_BODY + 1))
