#!/usr/bin/env node
// containerd-shim-lcow-v1: the shim v2 binary containerd starts for runtime_type io.containerd.lcow.v1.
// Thin entry point: the binary contract lives in src/shim.
import { main } from '../src/shim/main.js';

main(process.argv.slice(2), import.meta.url).catch((err: unknown) => {
  process.stderr.write(`containerd-shim-lcow-v1: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
