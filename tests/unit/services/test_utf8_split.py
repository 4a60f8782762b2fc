from node.services.gateway import utf8_split


def test_whole_text_passes() -> None:
    assert utf8_split(b"hello") == (b"hello", b"")
    assert utf8_split("héllo €".encode()) == ("héllo €".encode(), b"")
    assert utf8_split(b"") == (b"", b"")


def test_a_cut_character_waits_for_the_rest() -> None:
    for text in ("é", "€", "𝄞"):
        encoded = ("ab" + text).encode()
        for cut in range(3, len(encoded)):
            whole, tail = utf8_split(encoded[:cut])
            assert whole == b"ab" and tail == encoded[2:cut]
            assert (whole + tail + encoded[cut:]).decode() == "ab" + text


def test_every_split_of_a_stream_decodes_chunk_by_chunk() -> None:
    data = "naïve café – 日本語 𝄞!".encode()  # noqa: RUF001 (multi-byte characters on purpose)
    for size in range(1, 6):
        tail, out = b"", []
        for start in range(0, len(data), size):
            whole, tail = utf8_split(tail + data[start : start + size])
            out.append(whole.decode())  # each chunk decodes on its own
        assert "".join(out) + tail.decode() == data.decode()
