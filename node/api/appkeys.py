"""Typed keys for what the composition root puts on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from node.cluster import Cluster
from node.config import Config
from node.jobs.claims import ClaimCounts
from node.jobs.desk import JobDesk
from node.services.directory import ContainerDirectory
from node.store.faults import StoreHealth

CONFIG = web.AppKey("config", Config)
JOB_DESK = web.AppKey("job_desk", JobDesk)
DIRECTORY = web.AppKey("container_directory", ContainerDirectory)
MAX_BODY = web.AppKey("max_body_bytes", int)
# Filled by the chain module when it runs: () -> (address, pending on-chain count).
CHAIN_STATUS = web.AppKey("chain_status", object)
# Filled by the chain module when it runs: () -> "leader", "taking_over" or "standby".
CHAIN_ROLE = web.AppKey("chain_role", object)
CLUSTER = web.AppKey("cluster", Cluster)
# Set when the store is shared: what this node's job claims took over from dead nodes.
CLAIM_COUNTS = web.AppKey("claim_counts", ClaimCounts)
# Whether the store can write (GET /health reports it).
STORE_HEALTH = web.AppKey("store_health", StoreHealth)
