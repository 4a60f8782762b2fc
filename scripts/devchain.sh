#!/usr/bin/env bash
# A local dev chain with a node attached, in one command (for integration tests of contracts and
# services against this node):
#
#   scripts/devchain.sh            anvil on 127.0.0.1 + the Infernet test contracts + the hello-world
#                                  service + a node with the chain enabled (Ctrl-C stops them all)
#   scripts/devchain.sh --no-node  the same without the node: run it yourself with the printed config
#
# Environment: DEVCHAIN_DIR (default data/devchain), ANVIL_PORT (8545), SERVICE_PORT (3000),
# NODE_PORT (4000). Everything listens on 127.0.0.1 only. The chain starts empty each time.
#
# Keys are anvil's public development accounts (mnemonic "test test ... junk"): #0 deploys,
# #1 is the node's wallet, #2 signs delegated subscriptions for the deployed TestConsumer.
# Never use them anywhere but a local chain.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN_NODE=1
if [[ "${1:-}" == "--no-node" ]]; then RUN_NODE=0; fi

DIR="${DEVCHAIN_DIR:-$ROOT/data/devchain}"
ANVIL_PORT="${ANVIL_PORT:-8545}"
SERVICE_PORT="${SERVICE_PORT:-3000}"
NODE_PORT="${NODE_PORT:-4000}"
RPC_URL="http://127.0.0.1:$ANVIL_PORT"
ANVIL="$ROOT/tools/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
MNEMONIC="test test test test test test test test test test test junk"
NODE_KEY="0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"     # anvil account #1
SIGNER_KEY="0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"   # anvil account #2

scripts/setup-venv.sh
if [[ ! -x "$ANVIL" ]]; then
    echo "devchain: installing anvil (npm ci --prefix tools/chain)"
    npm ci --prefix tools/chain --no-audit --no-fund >/dev/null
fi
mkdir -p "$DIR"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ANVIL" --host 127.0.0.1 --port "$ANVIL_PORT" --chain-id 31337 --mnemonic "$MNEMONIC" --silent \
    >"$DIR/anvil.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    if .venv/bin/python - "$RPC_URL" <<'PY' 2>/dev/null
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                                 headers={"Content-Type": "application/json"})
json.load(urllib.request.urlopen(request, timeout=1))["result"]
PY
    then break; fi
    if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
        echo "devchain: anvil exited (port $ANVIL_PORT taken?):" >&2; cat "$DIR/anvil.log" >&2; exit 1
    fi
    sleep 0.1
done

.venv/bin/python tools/chain/deploy.py --rpc-url "$RPC_URL" --out "$DIR/deployment.json" >/dev/null

HOST=127.0.0.1 PORT="$SERVICE_PORT" .venv/bin/python containers/hello-world/app.py >"$DIR/hello-world.log" 2>&1 &
PIDS+=($!)

.venv/bin/python - "$DIR" "$RPC_URL" "$SERVICE_PORT" "$NODE_PORT" "$NODE_KEY" <<'PY'
import json, sys
from pathlib import Path

directory, rpc_url, service_port, node_port, node_key = sys.argv[1:]
deployment = json.loads(Path(directory, "deployment.json").read_text())
config = {
    "log": {"path": f"{directory}/node.log", "level": "INFO"},
    "server": {"host": "127.0.0.1", "port": int(node_port), "rate_limit": {"num_requests": 0}},
    "store": {"url": f"sqlite+aiosqlite:///{directory}/node.db"},
    "chain": {
        "enabled": True,
        "rpc_url": rpc_url,
        "registry_address": deployment["registry"],
        # anvil mines a block per transaction, so nothing needs to trail the head here.
        "trail_head_blocks": 0,
        "wallet": {"private_key": node_key},
        "snapshot_sync": {"sleep": 0.1, "batch_size": 200, "sync_period": 0.2},
    },
    "containers": [
        {"id": "hello-world", "url": f"http://127.0.0.1:{service_port}", "description": "echo service"}
    ],
}
Path(directory, "config.json").write_text(json.dumps(config, indent=2) + "\n")
PY
rm -f "$DIR/node.db" "$DIR/node.db-wal" "$DIR/node.db-shm"  # a fresh chain: forget the last run

printf '%s\n' "$SIGNER_KEY" >"$DIR/signer.key"
DEPLOYMENT="$(.venv/bin/python -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(f"{k}={d[k]}" for k in ("registry","coordinator","reader","consumer")))' "$DIR/deployment.json")"
cat <<EOF2

devchain is up (files in $DIR):
  chain (anvil)   $RPC_URL   chain id 31337
  contracts       $DEPLOYMENT
  hello-world     http://127.0.0.1:$SERVICE_PORT
  node config     $DIR/config.json   (node wallet: anvil account #1)
  signer key      $DIR/signer.key    (the TestConsumer's getSigner(): anvil account #2)

EOF2
if [[ "$RUN_NODE" == 1 ]]; then
    echo "starting the node on http://127.0.0.1:$NODE_PORT (Ctrl-C stops everything)"
    .venv/bin/infernet-node run --config "$DIR/config.json" &
    PIDS+=($!)
else
    echo "run the node with: .venv/bin/infernet-node run --config $DIR/config.json   (Ctrl-C here stops the chain)"
fi
wait -n "${PIDS[@]}"  # whichever stops first (Ctrl-C, or a crash) ends the devchain
