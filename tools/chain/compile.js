#!/usr/bin/env node
// Compile tools/chain/contracts/*.sol with solcjs (npm "solc", pinned in package.json) through
// standard JSON and write one artifact per deployable contract: build/<Contract>.json
// {contractName, sourceName, abi, bytecode, compiler}.
//
// Usage: node compile.js [--out DIR]
//   --out DIR   write artifacts to DIR instead of ./build (the staleness test compiles into a temp
//               dir and compares with the committed artifacts).
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const HERE = __dirname;
const CONTRACTS_DIR = path.join(HERE, 'contracts');

// Fixed settings: viaIR because the 11-field Subscription is "stack too deep" for EIP-712 hashing
// otherwise; evmVersion explicit because solc 0.8.37 defaults to osaka, while paris (no PUSH0) runs
// on every test chain (anvil, eth-tester, ganache) and matches the SDK.
const SETTINGS = {
  viaIR: true,
  evmVersion: 'paris',
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
};

function parseArgs(argv) {
  let outDir = path.join(HERE, 'build');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) {
      outDir = path.resolve(argv[++i]);
    } else {
      console.error(`unknown argument: ${argv[i]}`);
      process.exit(2);
    }
  }
  return { outDir };
}

function main() {
  const { outDir } = parseArgs(process.argv.slice(2));
  const started = Date.now();

  // Source unit names are "contracts/<File>.sol" so relative imports resolve without a callback.
  const sources = {};
  for (const file of fs.readdirSync(CONTRACTS_DIR).sort()) {
    if (file.endsWith('.sol')) {
      sources[`contracts/${file}`] = { content: fs.readFileSync(path.join(CONTRACTS_DIR, file), 'utf8') };
    }
  }

  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));

  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    console.error(e.formattedMessage || e.message);
  }
  if (errors.length > 0) {
    process.exit(1);
  }

  fs.mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const sourceName of Object.keys(output.contracts).sort()) {
    for (const [contractName, artifact] of Object.entries(output.contracts[sourceName])) {
      const bytecode = artifact.evm.bytecode.object;
      if (!bytecode) continue; // interfaces / abstract contracts are not deployable
      const out = {
        contractName,
        sourceName,
        abi: artifact.abi,
        bytecode: `0x${bytecode}`,
        compiler: { version: solc.version(), settings: { viaIR: SETTINGS.viaIR, evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer } },
      };
      fs.writeFileSync(path.join(outDir, `${contractName}.json`), `${JSON.stringify(out, null, 2)}\n`);
      written.push(contractName);
    }
  }
  console.log(`compiled ${written.join(', ')} with solc ${solc.version()} in ${Date.now() - started} ms -> ${outDir}`);
}

main();
