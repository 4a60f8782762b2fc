// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

import {Subscription, IComputeReceiver, ISignerAuthority} from "./Types.sol";

/// @title EIP712Coordinator (test double)
/// @notice A minimal coordinator with the Infernet SDK v1.1 ABI surface that the node uses:
///         the Subscription struct, `id`, the public mappings, createSubscription /
///         cancelSubscription / deliverCompute, the EIP-712 delegated-subscription entry points,
///         events and custom errors (same names, hence the same 4-byte selectors).
/// @dev Deliberately omitted (they revert with errors of our own, at delivery time so that such
///      subscriptions can still be created and seen by the node's guardian):
///        - lazy subscriptions / Inbox        -> LazyNotSupported()
///        - payments (paymentAmount > 0)      -> PaymentsNotSupported()
///        - proofs (verifier != address(0))   -> ProofsNotSupported()
///      The coordinator does not read the Registry, so there is no circular deployment.
contract EIP712Coordinator {
    // --- Errors the node classifies by selector (names/params must not change) ---
    error InvalidWallet();
    error IntervalMismatch();
    error IntervalCompleted();
    error UnauthorizedVerifier();
    error NodeRespondedAlready();
    error SubscriptionNotFound();
    error ProofRequestNotFound();
    error NotSubscriptionOwner();
    error SubscriptionCompleted();
    error SubscriptionNotActive();
    error UnsupportedVerifierToken();
    error SignerMismatch();
    error SignatureExpired();
    // In the SDK these live in Wallet / Allowlist / ERC20; declared here (never raised) so that this
    // ABI carries the node's whole selector table.
    error TransferFailed();
    error InsufficientFunds();
    error InsufficientAllowance();
    error NodeNotAllowed();
    error InsufficientBalance();
    /// @dev Same name as solady's ECDSA error: bad v, high s, or unrecoverable signature.
    error InvalidSignature();

    // --- Errors of our own for the omitted features ---
    error LazyNotSupported();
    error PaymentsNotSupported();
    error ProofsNotSupported();

    event SubscriptionCreated(uint32 indexed id);
    event SubscriptionCancelled(uint32 indexed id);
    event SubscriptionFulfilled(uint32 indexed id, address indexed node);

    string public constant EIP712_NAME = "InfernetCoordinator";
    string public constant EIP712_VERSION = "1";

    bytes32 public constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    bytes32 public constant EIP712_SUBSCRIPTION_TYPEHASH = keccak256(
        "Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,"
        "bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)"
    );

    // EIP-712: a type's encodeType is followed by the encodeTypes of the structs it references.
    bytes32 public constant EIP712_DELEGATE_SUBSCRIPTION_TYPEHASH = keccak256(
        "DelegateSubscription(uint32 nonce,uint32 expiry,Subscription sub)"
        "Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,"
        "bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)"
    );

    /// @dev secp256k1 n / 2: signatures with a larger s are malleable twins and are rejected.
    uint256 private constant HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice Next subscription id (so the newest existing id is `id - 1`).
    uint32 public id = 1;

    mapping(uint32 => Subscription) internal subscriptions;
    /// @notice keccak256(abi.encode(uint32 subscriptionId, uint32 interval)) => deliveries so far.
    mapping(bytes32 => uint16) public redundancyCount;
    /// @notice keccak256(abi.encode(uint32 subscriptionId, uint32 interval, address node)) => delivered.
    mapping(bytes32 => bool) public nodeResponded;
    /// @notice keccak256(abi.encode(address owner, uint32 nonce)) => subscription id created from it.
    mapping(bytes32 => uint32) public delegateCreatedIds;
    /// @notice Highest delegated-subscription nonce used per owner.
    mapping(address => uint32) public maxSubscriberNonce;

    // ------------------------------------------------------------------ subscriptions

    function createSubscription(
        string calldata containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        // A recurring subscription starts one period from now; a callback (period 0) immediately.
        return _storeSubscription(
            Subscription({
                owner: msg.sender,
                activeAt: uint32(block.timestamp) + period,
                period: period,
                frequency: frequency,
                redundancy: redundancy,
                containerId: keccak256(abi.encode(containerId)),
                lazy: lazy,
                verifier: payable(verifier),
                paymentAmount: paymentAmount,
                paymentToken: paymentToken,
                wallet: payable(wallet)
            })
        );
    }

    function cancelSubscription(uint32 subscriptionId) external {
        Subscription storage sub = subscriptions[subscriptionId];
        if (sub.owner != msg.sender) revert NotSubscriptionOwner();
        // Cancellation is encoded in activeAt; the node detects it by re-reading the subscription.
        sub.activeAt = type(uint32).max;
        emit SubscriptionCancelled(subscriptionId);
    }

    function getSubscription(uint32 subscriptionId) external view returns (Subscription memory) {
        return subscriptions[subscriptionId];
    }

    function getSubscriptionInterval(uint32 activeAt, uint32 period) public view returns (uint32) {
        if (period == 0) return 1;
        // Unchecked like the SDK: callers only rely on this once the subscription is active.
        unchecked {
            return ((uint32(block.timestamp) - activeAt) / period) + 1;
        }
    }

    // ------------------------------------------------------------------ delivery

    function deliverCompute(
        uint32 subscriptionId,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) external {
        _deliverCompute(subscriptionId, deliveryInterval, input, output, proof, nodeWallet);
    }

    // ------------------------------------------------------------------ delegated (EIP-712)

    function createSubscriptionDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint32) {
        return _createSubscriptionDelegatee(nonce, expiry, sub, v, r, s);
    }

    function deliverComputeDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) external {
        uint32 subscriptionId = _createSubscriptionDelegatee(nonce, expiry, sub, v, r, s);
        _deliverCompute(subscriptionId, deliveryInterval, input, output, proof, nodeWallet);
    }

    /// @notice EIP-712 domain separator for the current chain (recomputed so a fork keeps working).
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                EIP712_DOMAIN_TYPEHASH,
                keccak256(bytes(EIP712_NAME)),
                keccak256(bytes(EIP712_VERSION)),
                block.chainid,
                address(this)
            )
        );
    }

    /// @notice The digest a delegate signs (test aid: lets off-chain code check its own hashing).
    function hashDelegateSubscription(uint32 nonce, uint32 expiry, Subscription calldata sub)
        public
        view
        returns (bytes32)
    {
        // Subscription has only static fields, so abi.encode(typehash, sub) is exactly
        // typehash ‖ the 11 fields as 32-byte words, i.e. EIP-712 encodeData.
        bytes32 subHash = keccak256(abi.encode(EIP712_SUBSCRIPTION_TYPEHASH, sub));
        bytes32 structHash = keccak256(abi.encode(EIP712_DELEGATE_SUBSCRIPTION_TYPEHASH, nonce, expiry, subHash));
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
    }

    /// @notice EIP-5267 domain description (fields 0x0f: name, version, chainId, verifyingContract).
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", EIP712_NAME, EIP712_VERSION, block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    // ------------------------------------------------------------------ internals

    function _storeSubscription(Subscription memory sub) internal returns (uint32 subscriptionId) {
        subscriptionId = id++;
        subscriptions[subscriptionId] = sub;
        emit SubscriptionCreated(subscriptionId);
    }

    function _createSubscriptionDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) internal returns (uint32 subscriptionId) {
        bytes32 key = keccak256(abi.encode(sub.owner, nonce));
        subscriptionId = delegateCreatedIds[key];
        // Idempotent per (owner, nonce): a second node (or a retry) reuses the subscription. This also
        // makes a signature single-use, so there is no replay.
        if (subscriptionId != 0) return subscriptionId;

        if (uint32(block.timestamp) >= expiry) revert SignatureExpired();
        address signer = _recover(hashDelegateSubscription(nonce, expiry, sub), v, r, s);
        if (signer != ISignerAuthority(sub.owner).getSigner()) revert SignerMismatch();

        // Stored exactly as signed: activeAt is not recomputed.
        subscriptionId = _storeSubscription(sub);
        delegateCreatedIds[key] = subscriptionId;
        if (nonce > maxSubscriberNonce[sub.owner]) maxSubscriberNonce[sub.owner] = nonce;
    }

    /// @dev Check order follows the SDK, because the node maps the first failing check's error to
    ///      behaviour (e.g. NodeRespondedAlready is "another attempt won", IntervalMismatch is not).
    function _deliverCompute(
        uint32 subscriptionId,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address /* nodeWallet: only used for payments, which are omitted */
    ) internal {
        Subscription storage sub = subscriptions[subscriptionId];
        address owner = sub.owner;
        if (owner == address(0)) revert SubscriptionNotFound();
        if (uint32(block.timestamp) < sub.activeAt) revert SubscriptionNotActive();

        uint32 interval = getSubscriptionInterval(sub.activeAt, sub.period);
        if (interval != deliveryInterval) revert IntervalMismatch();
        if (interval > sub.frequency) revert SubscriptionCompleted();

        bytes32 intervalKey = keccak256(abi.encode(subscriptionId, interval));
        uint16 delivered = redundancyCount[intervalKey];
        if (delivered >= sub.redundancy) revert IntervalCompleted();
        redundancyCount[intervalKey] = delivered + 1;

        bytes32 nodeKey = keccak256(abi.encode(subscriptionId, interval, msg.sender));
        if (nodeResponded[nodeKey]) revert NodeRespondedAlready();
        nodeResponded[nodeKey] = true;

        // Where the SDK settles payments / proofs / the Inbox, we refuse (see contract docs).
        if (sub.paymentAmount > 0) revert PaymentsNotSupported();
        if (sub.verifier != address(0)) revert ProofsNotSupported();
        if (sub.lazy) revert LazyNotSupported();

        IComputeReceiver(owner).rawReceiveCompute(
            subscriptionId, interval, delivered + 1, msg.sender, input, output, proof, bytes32(0), 0
        );
        emit SubscriptionFulfilled(subscriptionId, msg.sender);
    }

    function _recover(bytes32 digest, uint8 v, bytes32 r, bytes32 s) internal pure returns (address signer) {
        if (v != 27 && v != 28) revert InvalidSignature();
        if (uint256(s) > HALF_CURVE_ORDER) revert InvalidSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
    }
}
