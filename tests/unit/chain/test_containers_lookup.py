import math

from node.chain.containers_lookup import ContainerLookup, containers_hash

# Vectors from client-contract.md §5.1 (keccak256 of the ABI-encoded string, not of the text).
ECHO = "0xe6bc11afcedb3f26d7fb181f4c6dd2e98781d79f965a4777058412b58f788ec8"
A_B = "0x0deeac3a841600829c99f8116bb997da266d4c47a720b00e6ace9594de82dd54"
B_A = "0x73ede0fe4b30aa8027db6b64635734b367776b05dc0bcf986c744c6bcbf6892e"


def test_hash_is_of_the_abi_encoded_joined_ids() -> None:
    assert "0x" + containers_hash(["echo"]).hex() == ECHO
    assert "0x" + containers_hash("a,b").hex() == A_B
    assert "0x" + containers_hash(["b", "a"]).hex() == B_A


def test_hand_encoding_matches_eth_abi() -> None:
    from eth_abi import encode
    from eth_utils import keccak

    for text in ("", "a", "x" * 31, "x" * 32, "x" * 33, "ü,é", "a,b,c" * 40):
        assert containers_hash(text) == keccak(encode(["string"], [text])), text


def test_every_ordered_chain_of_configured_ids_is_found() -> None:
    lookup = ContainerLookup(["a", "b", "c"])
    assert len(lookup) == 3 + 6 + 6
    assert lookup.containers(A_B) == ["a", "b"]
    assert lookup.containers(B_A) == ["b", "a"]
    assert lookup.containers(containers_hash(["c", "a", "b"])) == ["c", "a", "b"]


def test_hash_text_is_normalised() -> None:
    lookup = ContainerLookup(["echo"])
    for form in (ECHO, ECHO[2:], ECHO.upper().replace("0X", "0x"), "0X" + ECHO[2:], bytes.fromhex(ECHO[2:])):
        assert lookup.containers(form) == ["echo"]


def test_unknown_or_malformed_hash_gives_nothing() -> None:
    lookup = ContainerLookup(["echo"])
    assert lookup.containers(A_B) == []
    assert lookup.containers("0x1234") == []
    assert lookup.containers("not hex at all") == []
    assert lookup.containers("0x" + "00" * 32) == []


def test_table_is_capped_by_chain_length() -> None:
    ids = [f"c{i}" for i in range(9)]  # all chains: 986,409 hashes
    lookup = ContainerLookup(ids, max_entries=1000)
    # 9 singles + 72 pairs + 504 triples = 585 fit; 3024 chains of four do not.
    assert len(lookup) == 9 + 72 + 504 and lookup.max_length == 3
    assert lookup.containers(containers_hash(["c8", "c0", "c4"])) == ["c8", "c0", "c4"]
    assert lookup.containers(containers_hash(["c0", "c1", "c2", "c3"])) == []
    assert len(lookup) == sum(math.perm(9, r) for r in range(1, 4))


def test_singles_always_fit_even_under_a_tiny_cap() -> None:
    lookup = ContainerLookup(["a", "b", "c"], max_entries=1)
    assert lookup.containers(containers_hash(["b"])) == ["b"]
    assert lookup.containers(A_B) == []


def test_duplicate_ids_are_counted_once() -> None:
    assert len(ContainerLookup(["a", "a", "b"])) == 4
