#!/usr/bin/env node
// Entry point of the `qkt` CLI: runs the compiled TypeScript (built by `npm ci` / `npm run build`).
import { main } from '../dist/host-tools/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
