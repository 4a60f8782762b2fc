"""Delegated (EIP-712) subscriptions: our typed data reproduces infernet-client's signature
vector, and the coordinator's createSubscriptionDelegatee / deliverComputeDelegatee accept and
reject exactly as the node expects (chain.md §6, client-contract.md §5)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3, Web3
from web3.contract import AsyncContract
from web3.logs import DISCARD

from tests.support.chain import (
    ZERO_ADDRESS,
    InfernetDeployment,
    delegate_subscription_typed_data,
    delegatee_args,
    deploy_consumer,
    error_selector,
    expect_revert,
    increase_time,
    latest_timestamp,
    recover_delegate_signer,
    rpc,
    sign_delegate_subscription,
    subscription_tuple,
    transact,
)
from tests.support.vectors import delegated_body

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# client-contract.md §5.3: captured from the real infernet-client 1.4.0.
VECTOR_KEY = "0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"
VECTOR_SIGNER = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
VECTOR_COORDINATOR = Web3.to_checksum_address("0x1Fbdb2315678aFecb369F032D93f642f64140AA3")
VECTOR_CHAIN_ID = 31337
VECTOR_BODY: dict[str, Any] = delegated_body()


def sign_vector() -> dict[str, Any]:
    sub = VECTOR_BODY["subscription"]
    return sign_delegate_subscription(
        VECTOR_KEY,
        chain_id=VECTOR_CHAIN_ID,
        coordinator=VECTOR_COORDINATOR,
        owner=sub["owner"],
        nonce=7,
        expiry=2000000000,
        containers=["echo"],
        active_at=0,
        period=3,
        frequency=2,
        redundancy=2,
        data={"input": "hi"},
    )


def typed_digest(typed: dict[str, Any]) -> bytes:
    signable = encode_typed_data(full_message=typed)
    return Web3.keccak(b"\x19" + signable.version + signable.header + signable.body)


def owner_nonce_key(owner: str, nonce: int) -> bytes:
    return Web3.keccak(abi_encode(["address", "uint32"], [owner, nonce]))


async def sign_for(
    w3: AsyncWeb3[Any],
    chain: InfernetDeployment,
    consumer: AsyncContract,
    signer: LocalAccount,
    *,
    nonce: int,
    expiry_in: int = 600,
    period: int = 0,
    frequency: int = 1,
    redundancy: int = 1,
) -> dict[str, Any]:
    now = await latest_timestamp(w3)
    return sign_delegate_subscription(
        signer.key,
        chain_id=chain.chain_id,
        coordinator=chain.coordinator_address,
        owner=consumer.address,
        nonce=nonce,
        expiry=now + expiry_in,
        containers=["echo"],
        active_at=now,
        period=period,
        frequency=frequency,
        redundancy=redundancy,
        data={"input": "x"},
    )


def deliver_delegatee(
    chain: InfernetDeployment, body: dict[str, Any], interval: int = 1, output: bytes = b"out"
) -> Any:
    return chain.coordinator.functions.deliverComputeDelegatee(
        *delegatee_args(body), interval, b"in", output, b"", ZERO_ADDRESS
    )


def test_typed_data_reproduces_the_client_vector() -> None:
    body = sign_vector()
    assert body == VECTOR_BODY
    assert list(body) == ["signature", "subscription", "data"]
    assert list(body["subscription"]) == list(VECTOR_BODY["subscription"])
    signer = recover_delegate_signer(VECTOR_BODY, chain_id=VECTOR_CHAIN_ID, coordinator=VECTOR_COORDINATOR)
    assert signer == VECTOR_SIGNER
    # A different chain id or coordinator recovers someone else.
    assert recover_delegate_signer(VECTOR_BODY, chain_id=1, coordinator=VECTOR_COORDINATOR) != VECTOR_SIGNER


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_client_vector_is_accepted_on_chain(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    anvil_accounts: list[LocalAccount],
    chain_snapshot: str,
) -> None:
    """Put our coordinator's code at the vector's coordinator address (and a TestConsumer whose
    signer is the vector's signer at its owner address): the captured client signature must pass
    the on-chain EIP-712 verification unchanged."""
    deployer = anvil_accounts[0].address
    code = await anvil_w3.eth.get_code(infernet_chain.coordinator.address)
    await rpc(anvil_w3, "anvil_setCode", [VECTOR_COORDINATOR, code.to_0x_hex()])
    await rpc(
        anvil_w3, "anvil_setStorageAt", [VECTOR_COORDINATOR, "0x0", "0x" + (1).to_bytes(32, "big").hex()]
    )  # id = 1
    template = await deploy_consumer(anvil_w3, deployer, VECTOR_COORDINATOR, VECTOR_SIGNER)
    owner = Web3.to_checksum_address(VECTOR_BODY["subscription"]["owner"])
    await rpc(anvil_w3, "anvil_setCode", [owner, (await anvil_w3.eth.get_code(template.address)).to_0x_hex()])
    consumer = anvil_w3.eth.contract(address=owner, abi=template.abi)
    await transact(consumer.functions.setSigner(VECTOR_SIGNER), deployer)

    coordinator = anvil_w3.eth.contract(address=VECTOR_COORDINATOR, abi=infernet_chain.coordinator.abi)
    assert await coordinator.functions.id().call() == 1
    sig = VECTOR_BODY["signature"]
    typed = delegate_subscription_typed_data(
        VECTOR_BODY["subscription"],
        nonce=7,
        expiry=2000000000,
        chain_id=VECTOR_CHAIN_ID,
        coordinator=VECTOR_COORDINATOR,
    )
    on_chain_digest = await coordinator.functions.hashDelegateSubscription(
        7, 2000000000, subscription_tuple(VECTOR_BODY["subscription"])
    ).call()
    assert on_chain_digest == typed_digest(typed)

    create = coordinator.functions.createSubscriptionDelegatee(*delegatee_args(VECTOR_BODY))
    assert await create.call({"from": anvil_accounts[3].address}) == 1
    await transact(create, anvil_accounts[3].address)
    assert await coordinator.functions.delegateCreatedIds(owner_nonce_key(owner, sig["nonce"])).call() == 1
    assert await coordinator.functions.getSubscription(1).call() == subscription_tuple(VECTOR_BODY["subscription"])


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_deliver_compute_delegatee_creates_and_delivers(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    signer = anvil_accounts[9]  # infernet_consumer's getSigner()
    assert await infernet_consumer.functions.getSigner().call() == signer.address
    body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, signer, nonce=3, redundancy=2)
    coordinator = infernet_chain.coordinator
    node_a, node_b, node_c = (a.address for a in anvil_accounts[2:5])

    receipt = await transact(deliver_delegatee(infernet_chain, body, output=b"first"), node_a)
    created = coordinator.events.SubscriptionCreated().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["id"] for e in created] == [1]
    fulfilled = coordinator.events.SubscriptionFulfilled().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["id"], e["args"]["node"]) for e in fulfilled] == [(1, node_a)]

    # Stored exactly as signed.
    assert await coordinator.functions.getSubscription(1).call() == subscription_tuple(body["subscription"])
    assert await coordinator.functions.delegateCreatedIds(owner_nonce_key(infernet_consumer.address, 3)).call() == 1
    assert await coordinator.functions.maxSubscriberNonce(infernet_consumer.address).call() == 3
    assert await infernet_consumer.functions.deliveries(0).call() == (
        1, 1, 1, node_a, b"in", b"first", b"", b"\x00" * 32, 0
    )  # fmt: skip

    # A second node reuses the same subscription (no new id) and fills redundancy.
    receipt = await transact(deliver_delegatee(infernet_chain, body), node_b)
    assert coordinator.events.SubscriptionCreated().process_receipt(receipt, errors=DISCARD) == ()
    assert await coordinator.functions.id().call() == 2
    assert await infernet_consumer.functions.deliveryCount().call() == 2
    selector = await expect_revert(deliver_delegatee(infernet_chain, body).call({"from": node_c}))
    assert selector == error_selector("IntervalCompleted")


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_signer_mismatch(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    stranger = anvil_accounts[8]
    body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, stranger, nonce=1)
    node = anvil_accounts[2].address
    assert await expect_revert(deliver_delegatee(infernet_chain, body).call({"from": node})) == error_selector(
        "SignerMismatch"
    )
    create = infernet_chain.coordinator.functions.createSubscriptionDelegatee(*delegatee_args(body))
    assert await expect_revert(create.call({"from": node})) == error_selector("SignerMismatch")

    # Once the consumer authorises that key, the very same signature is accepted.
    await transact(infernet_consumer.functions.setSigner(stranger.address), anvil_accounts[0].address)
    await transact(deliver_delegatee(infernet_chain, body), node)


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_signature_expired(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    signer = anvil_accounts[9]
    node = anvil_accounts[2].address
    # expiry == block time is already expired (the contract uses >=).
    for expiry_in in (0, -100):
        body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, signer, nonce=1, expiry_in=expiry_in)
        selector = await expect_revert(deliver_delegatee(infernet_chain, body).call({"from": node}))
        assert selector == error_selector("SignatureExpired")
    # A valid signature expires once chain time passes it.
    body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, signer, nonce=2, expiry_in=30)
    await increase_time(anvil_w3, 31)
    selector = await expect_revert(deliver_delegatee(infernet_chain, body).call({"from": node}))
    assert selector == error_selector("SignatureExpired")


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_create_subscription_delegatee_is_idempotent_per_owner_nonce(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    coordinator = infernet_chain.coordinator
    node = anvil_accounts[2].address
    body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, anvil_accounts[9], nonce=5, expiry_in=60)
    create = coordinator.functions.createSubscriptionDelegatee(*delegatee_args(body))
    assert await create.call({"from": node}) == 1
    receipt = await transact(create, node)
    assert len(coordinator.events.SubscriptionCreated().process_receipt(receipt, errors=DISCARD)) == 1

    # Again (any sender): same id, no new subscription.
    receipt = await transact(create, anvil_accounts[3].address)
    assert coordinator.events.SubscriptionCreated().process_receipt(receipt, errors=DISCARD) == ()
    assert await coordinator.functions.id().call() == 2

    # The (owner, nonce) lookup wins even over expiry and signature checks.
    await increase_time(anvil_w3, 120)
    nonce, expiry, sub, _v, _r, _s = delegatee_args(body)
    garbage = coordinator.functions.createSubscriptionDelegatee(nonce, expiry, sub, 0, b"\x00" * 32, b"\x00" * 32)
    assert await garbage.call({"from": node}) == 1

    # A new nonce is a new subscription; maxSubscriberNonce only grows.
    lower = await sign_for(anvil_w3, infernet_chain, infernet_consumer, anvil_accounts[9], nonce=2)
    await transact(coordinator.functions.createSubscriptionDelegatee(*delegatee_args(lower)), node)
    assert await coordinator.functions.delegateCreatedIds(owner_nonce_key(infernet_consumer.address, 2)).call() == 2
    assert await coordinator.functions.maxSubscriberNonce(infernet_consumer.address).call() == 5


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_malformed_signatures_are_invalid(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    body = await sign_for(anvil_w3, infernet_chain, infernet_consumer, anvil_accounts[9], nonce=1)
    nonce, expiry, sub, v, r, s = delegatee_args(body)
    high_s = (SECP256K1_N - int.from_bytes(s, "big")).to_bytes(32, "big")
    invalid = error_selector("InvalidSignature")
    for args in (
        (55 - v, r, high_s),  # the malleable twin: same signer, but high s
        (29, r, s),  # bad v
        (v, b"\x00" * 32, s),  # unrecoverable
    ):
        fn = infernet_chain.coordinator.functions.createSubscriptionDelegatee(nonce, expiry, sub, *args)
        assert await expect_revert(fn.call({"from": anvil_accounts[2].address})) == invalid
    # A different nonce under the same signature recovers another address.
    fn = infernet_chain.coordinator.functions.createSubscriptionDelegatee(nonce + 1, expiry, sub, v, r, s)
    assert await expect_revert(fn.call({"from": anvil_accounts[2].address})) == error_selector("SignerMismatch")


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_recurring_delegated_subscription_continues_on_chain(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    node = anvil_accounts[2].address
    body = await sign_for(
        anvil_w3, infernet_chain, infernet_consumer, anvil_accounts[9], nonce=1, period=30, frequency=2
    )
    await transact(deliver_delegatee(infernet_chain, body, interval=1), node)
    await increase_time(anvil_w3, 30)
    # Interval 2 via the plain path, by id, like any on-chain subscription.
    fn = infernet_chain.coordinator.functions.deliverCompute(1, 2, b"", b"two", b"", ZERO_ADDRESS)
    await transact(fn, node)
    assert [(d[1], d[5]) for d in [await infernet_consumer.functions.deliveries(i).call() for i in range(2)]] == [
        (1, b"out"),
        (2, b"two"),
    ]
