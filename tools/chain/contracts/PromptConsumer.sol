// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

import {IComputeReceiver} from "./Types.sol";
import {EIP712Coordinator} from "./EIP712Coordinator.sol";

/// @title PromptConsumer
/// @notice A consumer that asks a chat model a question on chain and keeps its answer: the shape
///         of a real application contract. `ask` opens a one-shot callback subscription whose
///         container input is `abi.encode(string prompt)`; the node runs the model container and
///         delivers `output = abi.encode(bytes rawOutput, bytes processedOutput)`, where
///         rawOutput is the answer's UTF-8 text.
contract PromptConsumer is IComputeReceiver {
    error NotCoordinator();

    event Answered(uint32 indexed subscriptionId, address indexed node, string answer);

    EIP712Coordinator public immutable COORDINATOR;

    mapping(uint32 => string) public prompts;
    mapping(uint32 => string) public answers;
    mapping(uint32 => address) public answeredBy;

    constructor(address coordinator) {
        COORDINATOR = EIP712Coordinator(coordinator);
    }

    /// @notice Ask `prompt` of the model served under `containerId`; the answer arrives by callback.
    function ask(string calldata containerId, string calldata prompt) external returns (uint32 subscriptionId) {
        subscriptionId =
            COORDINATOR.createSubscription(containerId, 1, 0, 1, false, address(0), 0, address(0), address(0));
        prompts[subscriptionId] = prompt;
    }

    function getContainerInputs(uint32 subscriptionId, uint32, uint32, address)
        external
        view
        returns (bytes memory)
    {
        return abi.encode(prompts[subscriptionId]);
    }

    function rawReceiveCompute(
        uint32 subscriptionId,
        uint32,
        uint16,
        address node,
        bytes calldata,
        bytes calldata output,
        bytes calldata,
        bytes32,
        uint256
    ) external {
        if (msg.sender != address(COORDINATOR)) revert NotCoordinator();
        (bytes memory rawOutput,) = abi.decode(output, (bytes, bytes));
        answers[subscriptionId] = string(rawOutput);
        answeredBy[subscriptionId] = node;
        emit Answered(subscriptionId, node, string(rawOutput));
    }
}
