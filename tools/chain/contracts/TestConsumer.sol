// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

import {IComputeReceiver, ISignerAuthority} from "./Types.sol";
import {EIP712Coordinator} from "./EIP712Coordinator.sol";

/// @title TestConsumer
/// @notice Callback consumer, subscription consumer and delegator in one, for tests: it owns
///         subscriptions it creates through the coordinator, serves per-subscription inputs to the
///         node, and records every delivery so tests can assert on what arrived on chain.
/// @dev No access control on the helpers: this contract only ever lives on a throwaway test chain.
contract TestConsumer is IComputeReceiver, ISignerAuthority {
    struct Delivery {
        uint32 subscriptionId;
        uint32 interval;
        uint16 redundancy; // how many nodes had delivered for this interval, including this one
        address node;
        bytes input;
        bytes output;
        bytes proof;
        bytes32 containerId; // SDK: only set for lazy subscriptions (always 0 here)
        uint256 index; // SDK: Inbox index for lazy subscriptions (always 0 here)
    }

    error NotCoordinator();
    /// @notice Raised by rawReceiveCompute while `rejectDeliveries` is set (to test failed txs).
    error DeliveryRejected();

    event DeliveryReceived(
        uint32 indexed subscriptionId,
        uint32 indexed interval,
        address indexed node,
        uint16 redundancy,
        bytes input,
        bytes output,
        bytes proof
    );

    EIP712Coordinator public immutable COORDINATOR;
    address private signer;
    bool public rejectDeliveries;

    /// @notice Inputs the node receives from getContainerInputs, per subscription id.
    mapping(uint32 => bytes) public subscriptionInputs;
    Delivery[] private deliveryLog;

    constructor(address coordinator, address signer_) {
        COORDINATOR = EIP712Coordinator(coordinator);
        signer = signer_;
    }

    // ------------------------------------------------------------------ delegator

    function getSigner() external view returns (address) {
        return signer;
    }

    function setSigner(address signer_) external {
        signer = signer_;
    }

    // ------------------------------------------------------------------ subscription helpers

    /// @notice One-shot callback subscription (period 0, frequency 1), active immediately.
    function requestCallback(string calldata containerId, bytes calldata inputs, uint16 redundancy)
        external
        returns (uint32 subscriptionId)
    {
        subscriptionId =
            COORDINATOR.createSubscription(containerId, 1, 0, redundancy, false, address(0), 0, address(0), address(0));
        subscriptionInputs[subscriptionId] = inputs;
    }

    /// @notice Recurring subscription; its first interval starts `period` seconds from now.
    function createRecurring(
        string calldata containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bytes calldata inputs
    ) external returns (uint32 subscriptionId) {
        subscriptionId = COORDINATOR.createSubscription(
            containerId, frequency, period, redundancy, false, address(0), 0, address(0), address(0)
        );
        subscriptionInputs[subscriptionId] = inputs;
    }

    /// @notice Full pass-through (lazy / payment / verifier fields), e.g. to exercise node guardians.
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
        return COORDINATOR.createSubscription(
            containerId, frequency, period, redundancy, lazy, paymentToken, paymentAmount, wallet, verifier
        );
    }

    function cancel(uint32 subscriptionId) external {
        COORDINATOR.cancelSubscription(subscriptionId);
    }

    function setSubscriptionInputs(uint32 subscriptionId, bytes calldata inputs) external {
        subscriptionInputs[subscriptionId] = inputs;
    }

    function setRejectDeliveries(bool reject) external {
        rejectDeliveries = reject;
    }

    // ------------------------------------------------------------------ consumer interface

    function getContainerInputs(uint32 subscriptionId, uint32, uint32, address)
        external
        view
        returns (bytes memory)
    {
        return subscriptionInputs[subscriptionId];
    }

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
    ) external {
        // Only the coordinator has checked interval/redundancy/node, so only it may report deliveries.
        if (msg.sender != address(COORDINATOR)) revert NotCoordinator();
        if (rejectDeliveries) revert DeliveryRejected();
        deliveryLog.push(
            Delivery(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index)
        );
        emit DeliveryReceived(subscriptionId, interval, node, redundancy, input, output, proof);
    }

    // ------------------------------------------------------------------ views for tests

    function deliveryCount() external view returns (uint256) {
        return deliveryLog.length;
    }

    function deliveries(uint256 i) external view returns (Delivery memory) {
        return deliveryLog[i];
    }
}
