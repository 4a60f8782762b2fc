"""The chain side of the node: Infernet coordinator subscriptions on an EVM chain.

`runtime.ChainRuntime` builds and owns everything here; `app.py` starts it when
`chain.enabled` is set. Modules, from the outside in:

    registry.py           contract addresses from the Registry
    contracts.py          the reads the node makes (coordinator, reader, consumer), pinned to blocks
    listener.py           discovers subscriptions: snapshot sync, then new ids
    processor.py          tracks subscriptions and delivers each due interval
    wallet.py             simulates and sends transactions (nonces, reverts)
    delegated.py          delegated (EIP-712 signed) subscriptions from the REST API
    guardian.py           which subscriptions this node serves
    subscription.py, containers_lookup.py, reverts.py, eip712.py, serialize.py: pure helpers
"""
