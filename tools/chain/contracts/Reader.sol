// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

import {Subscription, ICoordinatorView} from "./Types.sol";

/// @title Reader (test double)
/// @notice Batch views so the node's snapshot sync needs one eth_call per batch.
contract Reader {
    error LengthMismatch();

    ICoordinatorView public immutable COORDINATOR;

    constructor(address coordinator) {
        COORDINATOR = ICoordinatorView(coordinator);
    }

    /// @notice Subscriptions with ids in [startId, endId); ids not created yet come back zeroed.
    function readSubscriptionBatch(uint32 startId, uint32 endId) external view returns (Subscription[] memory subs) {
        subs = new Subscription[](endId - startId); // endId < startId reverts (checked arithmetic)
        for (uint32 i = startId; i < endId; i++) {
            subs[i - startId] = COORDINATOR.getSubscription(i);
        }
    }

    /// @notice redundancyCount for each (ids[i], intervals[i]) pair.
    function readRedundancyCountBatch(uint32[] calldata ids, uint32[] calldata intervals)
        external
        view
        returns (uint16[] memory counts)
    {
        if (ids.length != intervals.length) revert LengthMismatch();
        counts = new uint16[](ids.length);
        for (uint256 i = 0; i < ids.length; i++) {
            counts[i] = COORDINATOR.redundancyCount(keccak256(abi.encode(ids[i], intervals[i])));
        }
    }
}
