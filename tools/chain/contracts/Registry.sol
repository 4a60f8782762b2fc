// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;

/// @title Registry (test double)
/// @notice Immutable address book; the node only configures the registry and reads the rest here.
/// @dev Unlike the SDK the coordinator does not read the registry back, so deployment is linear:
///      coordinator, reader, then this (INBOX / FEE / WALLET_FACTORY may be the zero address).
contract Registry {
    address public immutable COORDINATOR;
    address public immutable INBOX;
    address public immutable READER;
    address public immutable FEE;
    address public immutable WALLET_FACTORY;

    constructor(address coordinator, address inbox, address reader, address fee, address walletFactory) {
        COORDINATOR = coordinator;
        INBOX = inbox;
        READER = reader;
        FEE = fee;
        WALLET_FACTORY = walletFactory;
    }
}
