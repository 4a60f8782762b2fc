// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

/// @notice One Infernet subscription. Field order and types are part of the wire format: the node
///         decodes `getSubscription` positionally and the EIP-712 `Subscription` type hashes these
///         fields in this order, so never reorder them.
struct Subscription {
    address owner; // consumer contract; receives rawReceiveCompute; the EIP-712 "delegator"
    uint32 activeAt; // first active timestamp; type(uint32).max means cancelled
    uint32 period; // seconds between intervals; 0 = one-shot callback
    uint32 frequency; // number of intervals
    uint16 redundancy; // distinct nodes allowed per interval
    bytes32 containerId; // keccak256(abi.encode(string "id1,id2"))
    bool lazy; // SDK: output goes to an Inbox (not supported by this test coordinator)
    address payable verifier; // 0 = no proof (proofs not supported here)
    uint256 paymentAmount; // 0 = free (payments not supported here)
    address paymentToken; // 0 = ETH
    address payable wallet; // paying wallet
}

/// @notice What the coordinator calls on a subscription owner when a node delivers.
interface IComputeReceiver {
    function rawReceiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) external;
}

/// @notice An owner contract that authorises an EOA to sign delegated subscriptions for it.
interface ISignerAuthority {
    function getSigner() external view returns (address);
}

/// @notice The read surface of the coordinator that the Reader needs.
interface ICoordinatorView {
    function getSubscription(uint32 subscriptionId) external view returns (Subscription memory);
    function redundancyCount(bytes32 key) external view returns (uint16);
}
